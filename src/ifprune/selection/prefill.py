"""Dense prefill: the prompt runs through the full model, the answer through the compact one.

Selection already pays a dense pass over the prompt (the predictor reads the model's own hidden
states); running the prompt again through the k-wide model only makes the answer attend to a worse
copy of it. With a dense prefill the compact model attends to the full model's keys and values of
the prompt and predicts every answer token itself (the prompt's last token is its first input), as
GRIFFIN runs its prompt phase. Decode is unchanged: one smaller dense model per answer.
"""

from __future__ import annotations

import torch

from ..core.prompt_pass import decoder_body

from ..core.errors import IfpruneError

PREFILLS = ("pruned", "dense")


def check_prefill(prefill: str) -> str:
    if prefill not in PREFILLS:
        raise IfpruneError(f"prefill must be one of {', '.join(PREFILLS)}, got {prefill!r}")
    return prefill


def dense_prefix_cache(lm, ids: torch.Tensor):
    """The full model's KV cache of `ids` [1, tokens] (no LM head)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=lm.model.config)
    with torch.no_grad():
        decoder_body(lm.model)(input_ids=ids, past_key_values=cache, use_cache=True)
    return cache
