"""Re-selection after the first tokens of the answer ("refresh").

A prompt says little about which channels the answer will need: on the shipped keep-3/4 artifact,
masks from GRIFFIN over the prompt *and* the answer take code from 1.21x to 1.06x dense on the same
weights, while the prompt alone cannot (benchmarks/oracle_masks.py). Once R answer tokens exist they
can be read: the refreshed plan keeps each layer's top channels of the selector's own scores plus
GRIFFIN's over the prompt and those R tokens (each standardised per layer, so neither scale wins by
size), computed in one forward of the full model over the tokens so far. Generation then continues
from a fresh prefill under the new plan: still one smaller dense model at a time, with one extra
selection and prefill per answer.

Off by default, except for an artifact trained under re-selection (recipe `refresh: R`, e.g. the
shipped ones): it re-selects after every R answer tokens unless told otherwise (`resolve_reselection`),
with the full model's KV cache of everything before each segment ("dense-answer", selection.prefill);
held out, every R beat one re-selection after R with a pruned prefill at both keeps
(results/refresh/every/), and dense-answer matched or beat re-running the answer through the compact model
(results/refresh/dense_answer/) while skipping that re-run.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from ..core.errors import IfpruneError
from ..core.hooks import record_intermediates
from ..core.prompt_pass import decoder_body, paced_pass, pacing
from ..core.plan import Plan
from ..core.prompting import eos_ids
from .heads import standardise
from .prefill import crop_to, own_prompt_state, resolve_prefill
from .selectors import GriffinSelector, Selector, griffin_squares


def check_refresh(refresh: int | None) -> int | None:
    """None or 0: off; else the number of answer tokens before re-selection."""
    if refresh is None or refresh == 0:
        return None
    if isinstance(refresh, bool) or not isinstance(refresh, int) or refresh < 0:
        raise IfpruneError(f"refresh must be a whole number of tokens >= 1 (0 or none: off), got {refresh!r}")
    return refresh


def default_refresh(selector) -> int | None:
    """The selector's own default: an artifact trained under re-selection (recipe `refresh`) runs with it."""
    art = getattr(selector, "artifact", None)
    return art.refresh if art is not None else None


def resolve_refresh(refresh: int | None, selector) -> int | None:
    """What runs: None takes the selector's default (`default_refresh`), 0 turns re-selection off."""
    return default_refresh(selector) if refresh is None else check_refresh(refresh)


def repeats(every: bool | None, refresh: int | None, R: int | None) -> bool:
    """The rule, given the R that runs: None: yes when R is the artifact's own default (`refresh` not given),
    so `refresh R` given alone re-selects once, as it always has."""
    if every is None:
        return R is not None and refresh is None
    if every and R is None:
        raise IfpruneError("refresh_every re-selects after every R answer tokens: turn re-selection on (refresh R, "
                           "or an artifact trained under it)")
    return bool(every)


RESELECT_MODES = ("off", "once", "every")
DEFAULT_TOKENS = 32  # answer tokens between re-selections when neither the caller nor the artifact says


def from_mode(mode: str | None, tokens: int | None, selector, *, flag: str = "reselect") -> tuple[int | None, bool | None]:
    """The (refresh R, every) pair `resolve_reselection` takes, from the one spelling every entry point shares:
    `reselect` off | once | every and `reselect_tokens` N, with independent defaults (None, None: the selector's
    own; a mode alone: the artifact's own N, else 32; N alone: the selector's own mode, every for the shipped
    artifacts). `flag`: how the caller spells it, for errors (`--reselect` on the command line)."""
    if mode is None and tokens is None:
        return None, None
    if mode is not None and mode not in RESELECT_MODES:
        raise IfpruneError(f"{flag} must be one of {', '.join(RESELECT_MODES)}, got {mode!r}")
    own = default_refresh(selector)
    mode = mode or ("every" if own else "off")
    tokens_flag = flag + ("-tokens" if flag.startswith("--") else "_tokens")
    if mode == "off":
        if tokens is not None:
            raise IfpruneError(f"{tokens_flag} needs re-selection on: add {flag} once or {flag} every (this selector "
                               "does not re-select by default)")
        return 0, None
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1):
        raise IfpruneError(f"{tokens_flag} must be a whole number >= 1 (turn re-selection off with {flag} off), "
                           f"got {tokens!r}")
    return (tokens if tokens is not None else own or DEFAULT_TOKENS), mode == "every"


def mode_of(refresh: int | None, every: bool) -> str:
    """The reselect mode of a resolved (R, every) pair: what JSON records and `from_mode` reads back."""
    return "off" if not refresh else "every" if every else "once"


def to_mode(refresh: int | None, every: bool | None, selector) -> tuple[str, int | None]:
    """The earlier spelling (refresh R, refresh_every) as (reselect mode, tokens), meaning what it always meant."""
    R = resolve_refresh(refresh, selector)
    every = repeats(every, refresh, R)  # (refuses every without an R, as it always has)
    return mode_of(R, every), R


def reselect_settings(reselect: str | None, reselect_tokens: int | None, refresh: int | None,
                      refresh_every: bool | None, selector, *, where: str) -> tuple[int | None, bool | None]:
    """(refresh R, every) for a library entry point (`where`) that takes the one spelling, `reselect` /
    `reselect_tokens`, and the earlier `refresh` / `refresh_every` for one release with a FutureWarning."""
    if refresh is None and refresh_every is None:
        return from_mode(reselect, reselect_tokens, selector)
    if reselect is not None or reselect_tokens is not None:
        raise IfpruneError(f"{where}: reselect/reselect_tokens and the deprecated refresh/refresh_every set the same "
                           "thing: give only reselect and reselect_tokens")
    import warnings

    warnings.warn(f"{where}: refresh/refresh_every are deprecated and go in the next release: use reselect="
                  "'off'|'once'|'every' and reselect_tokens=N", FutureWarning, stacklevel=3)
    return refresh, refresh_every


@dataclass(frozen=True)
class Reselection:
    """What runs after the prompt's plan: re-select after `refresh` answer tokens (None: never), again after
    every `refresh` when `every`; the prompt prefilled by the full model ("dense") or the compact one."""

    refresh: int | None
    every: bool
    prefill: str

    @classmethod
    def off(cls, prefill: str | None = None) -> "Reselection":
        """One plan for the whole answer (a fixed plan file, the full width)."""
        return cls(None, False, resolve_prefill(prefill, False))


def resolve_reselection(refresh: int | None, every: bool | None, prefill: str | None, selector) -> Reselection:
    """The settings that run, from the ones given (None: the selector's default). The one place the entry
    points (generate, eval's scorer, serve, bench) resolve them, so each runs what the others run."""
    R = resolve_refresh(refresh, selector)
    every = repeats(every, refresh, R)
    return Reselection(R, every, resolve_prefill(prefill, every))


def answer_goes_on(lm, out: torch.Tensor, prompt_len: int, after: int, *, ignore_eos: bool = False) -> bool:
    """After a first segment of at most `after` new tokens (`out`: prompt and segment, batch of one):
    whether it used them all without ending the answer, so a segment under the refreshed plan follows.
    `ifprune generate` and the eval scorer split an answer here, so both run what was measured."""
    return out.shape[1] - prompt_len == after and (ignore_eos or int(out[0, -1]) not in eos_ids(lm))


def segment_lengths(total: int, refresh: int | None, every: bool) -> list[int]:
    """New tokens per plan: all under one plan; [R, rest] with one re-selection; [R, R, ..., rest] with `every`.
    A segment runs only while the answer goes on (`answer_goes_on`)."""
    if not refresh or total <= refresh:
        return [total]
    if not every:
        return [refresh, total - refresh]
    return [refresh] * (total // refresh) + ([total % refresh] if total % refresh else [])


def combine(own: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """The re-selection rule (inference and training share it): each score set standardised per layer, summed."""
    return standardise(own.float()) + standardise(seen.float())


@dataclass
class PromptState:
    """What the selector's own dense pass over a prompt leaves for a re-selection: GRIFFIN's squared
    column sums over the prompt and the pass's KV cache, so that re-selecting needs a dense pass over
    the new answer tokens only (GRIFFIN's scores are a root of a sum over tokens). The answer tokens a
    re-selection read stay in the cache with their squares (`answer`, `answer_squares`), so the next one
    over the same answer reads only what followed."""

    ids: torch.Tensor  # [tokens] the prompt ids the pass read
    squares: torch.Tensor  # [layers, d_ffn]
    cache: object  # the pass's KV cache: the prompt, then `answer`
    answer: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    answer_squares: torch.Tensor | None = None

    def forget_answer(self) -> None:
        crop_to(self.cache, int(self.ids.numel()))
        self.answer, self.answer_squares = self.answer[:0], None


def prompt_pass(lm, ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
    """One dense pass of the decoder body over one prompt: (last hidden state, PromptState)."""
    squares, res = _recorded_pass(lm, input_ids=ids, attention_mask=attention_mask, use_cache=True)
    return res.last_hidden_state, PromptState(ids[0].detach().cpu(), squares, res.past_key_values)


def _recorded_pass(lm, **inputs):
    """A decoder-body pass of one sequence that sums GRIFFIN's squares per layer: (squares, output). A fresh pass
    (no cache given) over a long prompt runs a chunk at a time inside core.prompt_pass.paced (the server); one that
    continues a PromptState's cache never does (another request's re-selection may share that state)."""
    squares = torch.zeros(lm.num_layers, lm.d_ffn)

    def acc(i, x):
        squares[i] += griffin_squares(x)[0].cpu()

    ids = inputs["input_ids"]
    model, layout = lm.reader()
    if "cache" not in inputs and pacing(ids, inputs.get("attention_mask")):
        from transformers.modeling_outputs import BaseModelOutputWithPast

        hidden, cache = paced_pass(model, ids, hooks=lambda: record_intermediates(layout, acc))
        return squares, BaseModelOutputWithPast(last_hidden_state=hidden, past_key_values=cache)
    with torch.no_grad(), record_intermediates(layout, acc):
        res = decoder_body(model)(**inputs)
    return squares, res


def prompt_cache_state(lm, selector, text: str | None, ids: torch.Tensor, *, copied: bool = True):
    """(prefill.prompt_cache, the PromptState a re-selection continues): the selector's own when its pass read these
    ids, else that of the one full-model pass the dense prefill then needs (a prompt longer than the selector reads,
    or a task's), so no re-selection reads the prompt again. `copied=False`: the state's own cache (a decoder that
    only reads its first positions, runtime.lean, needs no copy)."""
    state = own_prompt_state(lm, selector, text, ids)
    if state is None:
        _, state = prompt_pass(lm, ids)
    return (crop_to(copy.deepcopy(state.cache), ids.shape[1] - 1) if copied else state.cache), state


def prompt_squares(lm, state: PromptState | None, ids: torch.Tensor) -> torch.Tensor:
    """GRIFFIN's squared sums [layers, d_ffn] over the prompt `ids` [1, T]: a copy of `state`'s when its pass read
    exactly these ids, else from one pass."""
    if state is not None and torch.equal(state.ids, ids[0].cpu()):
        return state.squares.clone()
    squares, _ = _recorded_pass(lm, input_ids=ids.to(lm.device))
    return squares


def seen_scores(lm, ids: torch.Tensor, state: PromptState | None = None) -> torch.Tensor:
    """GRIFFIN's scores over `ids` [tokens]; from `state` and a pass over the tokens after what it holds when `ids`
    starts with its prompt (and the answer it read last), else from a pass over all of `ids`."""
    n = 0 if state is None else int(state.ids.numel())
    if not n or ids.numel() <= n or not torch.equal(ids[:n].cpu(), state.ids):
        return GriffinSelector.scores_from_ids(lm, ids.unsqueeze(0).to(lm.device))
    m = int(state.answer.numel())
    if not m or ids.numel() <= n + m or not torch.equal(ids[n:n + m].cpu(), state.answer):
        state.forget_answer()
        m = 0
    crop_to(state.cache, n + m)  # (nothing but what it read: a decode sharing it may have gone on)
    try:
        squares, _ = _recorded_pass(lm, input_ids=ids[n + m:].unsqueeze(0).to(lm.device), cache=state.cache,
                                    use_cache=True)
    except BaseException:
        state.forget_answer()
        raise
    state.answer = ids[n:].detach().cpu()
    state.answer_squares = squares if state.answer_squares is None else state.answer_squares + squares
    return (state.squares + state.answer_squares).sqrt()


def refresh_scores(lm, selector: Selector, text: str | None, ids: torch.Tensor,
                   state: PromptState | None = None) -> torch.Tensor:
    """[layers, d_ffn]: `combine` of the selector's scores of `text` and GRIFFIN's over `ids` (continuing `state`,
    else the selector's own prompt state)."""
    if ids.dim() == 2:
        if ids.shape[0] != 1:
            raise IfpruneError("refresh re-selects one sequence at a time")
        ids = ids[0]
    text = text if selector.per_prompt else None
    own = selector.cached_scores(lm, text)
    state = state if state is not None else selector.prompt_state(lm, text)
    return combine(own.cpu(), seen_scores(lm, ids, state).cpu())


def refresh_plan(lm, selector: Selector, text: str | None, ids: torch.Tensor, width: int, after: int,
                 state: PromptState | None = None) -> Plan:
    """The plan for the rest of an answer whose first `after` tokens end `ids` (prompt + answer so far); `state`:
    a dense pass over the prompt to continue (default: the selector's own)."""
    return Plan.from_scores(refresh_scores(lm, selector, text, ids, state), width,
                            _refresh_meta(lm, selector, after, int(ids.shape[-1])))


def squares_plan(lm, selector: Selector, text: str | None, squares: torch.Tensor, width: int, after: int,
                 tokens: int) -> Plan:
    """`refresh_plan` from GRIFFIN's squared sums already in hand ([layers, d_ffn] over the prompt and the answer
    so far: the "kept" prefill's, selection.decoded); `tokens`: prompt + answer so far."""
    own = selector.cached_scores(lm, text if selector.per_prompt else None)
    return Plan.from_scores(combine(own.cpu(), squares.sqrt()), width, _refresh_meta(lm, selector, after, tokens))


def _refresh_meta(lm, selector: Selector, after: int, tokens: int) -> dict:
    return {"selector": selector.name, **selector.options(), "model": lm.fingerprint(),
            "refresh": {"after": after, "tokens": tokens}}

