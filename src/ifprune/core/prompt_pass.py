"""The dense pass over a prompt that selection makes, as cheap as it can be.

Selection is paid before the first token, so it counts twice: in TTFT and in the paper's "selection
+ loading is 1-2% of generation" claim. Two things in a plain `model(ids)` call are waste there: the
LM head (logits over the whole vocabulary for every prompt token; a fifth of SmolLM2-135M's forward)
and a KV cache nobody reads. A predictor that reads the hidden state after N < L layers should also
not pay for the other L - N layers.
"""

from __future__ import annotations

import weakref

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
