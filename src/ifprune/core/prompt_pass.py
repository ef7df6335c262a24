"""The dense pass over a prompt that selection makes, as cheap as it can be.

Selection is paid before the first token, so it counts twice: in TTFT and in the paper's "selection
+ loading is 1-2% of generation" claim. Two things in a plain `model(ids)` call are waste there: the
LM head (logits over the whole vocabulary for every prompt token; a fifth of SmolLM2-135M's forward)
and a KV cache nobody reads. A predictor that reads the hidden state after N < L layers should also
not pay for the other L - N layers.
"""

from __future__ import annotations

import threading
import weakref
from contextlib import contextmanager, nullcontext
from typing import Callable, ContextManager, Iterator

import torch
from torch import nn

from .errors import IfpruneError
from .hooks import forward_until


def decoder_body(model: nn.Module) -> nn.Module:
    """The model without its LM head (the module whose output has `last_hidden_state`)."""
    inner = getattr(model, "module", model)  # DDP / accelerate wrappers
    get = getattr(inner, "get_decoder", None)
    if callable(get):
        try:
            body = get()
        except Exception:  # exotic models raise instead of answering
            body = None
        if isinstance(body, nn.Module) and body is not inner:
            return body
    return inner


_BLOCKS: "weakref.WeakKeyDictionary[nn.Module, list[nn.Module]]" = weakref.WeakKeyDictionary()


def _decoder_blocks(model: nn.Module) -> list[nn.Module]:
    """The decoder blocks in order (found through the FFN layout, so any supported family works)."""
    if model not in _BLOCKS:
        from .ffn import discover

        _BLOCKS[model] = [layer.block for layer in discover(model).layers]
    return _BLOCKS[model]


def prompt_hidden(model: nn.Module, ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                  layers: int | None = None) -> torch.Tensor:
    """[batch, tokens, hidden]: the hidden states after `layers` decoder blocks (None: all, with the
    final norm, i.e. HF's last hidden state), without the LM head and stopping after block `layers`."""
    blocks = _decoder_blocks(model) if layers is not None else []
    if layers is not None and not 1 <= layers <= len(blocks):
        raise IfpruneError(f"backbone_layers must be in 1..{len(blocks)} for this model, got {layers}")
    body = decoder_body(model)
    with torch.no_grad():
        if layers is None or layers == len(blocks):
            return body(input_ids=ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        return forward_until(blocks[layers - 1],
                             lambda: body(input_ids=ids, attention_mask=attention_mask, use_cache=False))


# pacing --------------------------------------------------------------------------------------------------
# A server's one worker must not vanish into a long prompt's pass while other clients wait for their next token.
# Inside `paced(chunk, between)` the passes below read a long sequence `chunk` tokens at a time through a KV cache
# and call `between()` after each chunk but the last, where the caller runs other work. Forward hooks (GRIFFIN's
# recorders) are entered per chunk, so nothing `between()` runs passes under them.

_PACE = threading.local()


@contextmanager
def paced(chunk: int, between: Callable[[], None]) -> Iterator[None]:
    """Passes over more than `chunk` tokens in this thread run in chunks with `between()` after each."""
    if chunk < 1:
        raise IfpruneError(f"a prefill chunk must be at least 1 token, got {chunk}")
    old = getattr(_PACE, "value", None)
    _PACE.value = (chunk, between)
    try:
        yield
    finally:
        _PACE.value = old


def pacing(ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> bool:
    """Whether a pass over `ids` runs paced here: inside `paced`, one sequence without padding, longer than a chunk.
    Outside `paced` every pass runs as it always has (one call)."""
    value = getattr(_PACE, "value", None)
    return (value is not None and ids.shape[0] == 1 and ids.shape[1] > value[0]
            and (attention_mask is None or bool(attention_mask.all())))


def paced_pass(model: nn.Module, ids: torch.Tensor, *, cache=None,
               hooks: Callable[[], ContextManager] = nullcontext):
    """The decoder body of `model` over one unpadded sequence `ids` [1, T], continuing `cache` (None: a new one),
    under `hooks()`: (last hidden state [1, T, hidden], the cache); a chunk at a time where `pacing` says so."""
    from transformers import DynamicCache

    body = decoder_body(model)
    if cache is None:
        cache = DynamicCache(config=body.config)
    chunk, between = _PACE.value if pacing(ids) else (max(ids.shape[1], 1), None)
    hidden = []
    for start in range(0, ids.shape[1], chunk):
        if start:  # (what `between` runs is not paced: it runs inside this pass's chunk boundary)
            _PACE.value = None
            try:
                between()
            finally:
                _PACE.value = (chunk, between)
        with torch.no_grad(), hooks():
            res = body(input_ids=ids[:, start:start + chunk], cache=cache, use_cache=True)
        hidden.append(res.last_hidden_state)
    return torch.cat(hidden, dim=1), cache
