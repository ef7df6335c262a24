"""Dense prefill: the prompt runs through the full model, the answer through the compact one.

Selection already pays a dense pass over the prompt (the predictor reads the model's own hidden
states); running the prompt again through the k-wide model only makes the answer attend to a worse
copy of it. With a dense prefill the compact model attends to the full model's keys and values of
the prompt and predicts every answer token itself (the prompt's last token is its first input), as
GRIFFIN runs its prompt phase. Decode is unchanged: one smaller dense model per answer.

With re-selection the full model also reads the answer so far at each re-selection (GRIFFIN's part of
the new plan needs its activations there), so its KV cache of the whole sequence exists for free.
"dense-answer" keeps it: the compact model under the new plan attends to the full model's keys and values
of the prompt and of the answer so far, and only its own segment's tokens are its own. That removes the
compact re-prefill of the answer at each re-selection ("dense" re-runs it under the new plan).
"kept" needs no dense pass over the answer at all: each answer token's KV cache is the one the compact model
wrote when it read it, kept across plans, and re-selection reads GRIFFIN's scores from the FFN inputs the
compact model recorded (selection.decoded).
"""

from __future__ import annotations

import copy

import torch

from ..core.errors import IfpruneError
from ..core.prompt_pass import decoder_body, paced_pass, pacing

PREFILLS = ("pruned", "dense", "dense-answer", "kept")


def check_prefill(prefill: str, without_kept: str | None = None) -> str:
    """`prefill`, checked; `without_kept`: the decoder that runs it, when that decoder does not record the FFN
    inputs "kept" needs (then kept is refused, naming it)."""
    if prefill not in PREFILLS:
        raise IfpruneError(f"prefill must be one of {', '.join(PREFILLS)}, got {prefill!r}")
    if prefill == "kept" and without_kept:
        raise IfpruneError(f"prefill kept records each answer's FFN inputs, which {without_kept} does not: use "
                           "--prefill dense-answer (the default under re-selection every R) or dense")
    return prefill


def resolve_prefill(prefill: str | None, every: bool) -> str:
    """None: dense-answer when re-selecting after every R tokens (no re-selection re-runs the prompt or the
    answer so far: the fastest, and held out as good as "dense" or better, results/refresh/dense_answer/), else
    pruned (as an export runs)."""
    return check_prefill(prefill) if prefill is not None else ("dense-answer" if every else "pruned")


def reads_prompt_dense(prefill: str) -> bool:
    """Whether the full model, not the compact one, fills the prompt's KV cache."""
    return prefill in ("dense", "dense-answer", "kept")


def read_all_of(state, ids: torch.Tensor) -> bool:
    """Whether a PromptState's pass (selection.refresh: the prompt, then the answer a re-selection read) read
    exactly `ids` [1, T], so its KV cache holds all of them."""
    if state is None:
        return False
    seen = torch.cat([state.ids, state.answer])
    return (seen.numel() == ids.shape[1] and torch.equal(seen, ids[0].cpu())
            and state.cache.get_seq_length() >= seen.numel())


def carried_cache(state, ids: torch.Tensor):
    """The full model's KV cache of `ids` [1, T] but its last token, copied from a PromptState that read exactly
    these ids (`read_all_of`), else None."""
    return crop_to(copy.deepcopy(state.cache), ids.shape[1] - 1) if read_all_of(state, ids) else None


def dense_prefix_cache(lm, ids: torch.Tensor):
    """The full model's KV cache of `ids` [1, tokens] (no LM head)."""
    from transformers import DynamicCache

    model, _ = lm.reader()
    if pacing(ids):
        return paced_pass(model, ids)[1]
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        decoder_body(model)(input_ids=ids, cache=cache, use_cache=True)
    return cache


def prompt_cache(lm, selector, text: str | None, ids: torch.Tensor, state=None):
    """The full model's KV cache of `ids` [1, T] but its last token: a copy of the selector's own prompt pass
    when that pass read exactly these ids (a re-selecting artifact keeps it; `state`: that pass's PromptState,
    when the caller holds it), else one pass of the full model.
    Cropped back to T - 1 tokens before each segment (`crop_to`), so re-selection re-runs only the answer."""
    if state is None or not read_all_of(state, ids):
        state = own_prompt_state(lm, selector, text, ids)
    if state is not None:
        return crop_to(copy.deepcopy(state.cache), ids.shape[1] - 1)  # the selector's own stays whole
    return dense_prefix_cache(lm, ids[:, :-1])


def own_prompt_state(lm, selector, text: str | None, ids: torch.Tensor):
    """The selector's PromptState (selection.refresh) when its own pass read exactly `ids` [1, T], else None."""
    get = getattr(selector, "prompt_state", None)
    state = get(lm, text) if callable(get) and text is not None else None
    if (state is not None and state.ids.numel() == ids.shape[1] and torch.equal(state.ids, ids[0].cpu())
            and state.cache.get_seq_length() >= ids.shape[1]):  # (then any answer a re-selection read)
        return state
    return None


def crop_to(cache, tokens: int):
    """`cache` with only its first `tokens` positions (the dense prompt), ready for the next segment."""
    if cache is not None and (extra := cache.get_seq_length() - tokens) > 0:
        cache.crop(-extra)  # (transformers 5: a negative count removes that many tokens)
    return cache
