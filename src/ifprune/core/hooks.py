"""Masked execution and activation recording, both at the input of each layer's down projection.

That input *is* the FFN intermediate activation in every supported family (act(gate) * up, or
act(up)), so one hook point serves gated, fused and plain MLPs alike. Also: stopping a forward
early, for passes that only need the first blocks (sequential pruning, a predictor's read-out).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch

from .errors import IfpruneError
from .ffn import FFNLayout


class MaskedFFN:
    """Multiply FFN intermediate activations by per-example masks `[batch, layers, d_ffn]`.

    The product is differentiable in the masks, which is what joint training needs. Masks of shape
    `[layers, d_ffn]` apply to every example. Hooks stay registered; outside `apply` they do nothing.
    """

    def __init__(self, layout: FFNLayout,
                 compensate: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor] | None = None):
        self.layout = layout
        # compensate(layer_index, masked activation, kept channel indices [batch, k]) -> the activation the
        # down projection reads (training under compensated plans: compensation.refit.reconstruct)
        self.compensate = compensate
        self._masks: torch.Tensor | None = None
        self._dense: torch.Tensor | None = None
        self._record: Callable[[int, torch.Tensor], None] | None = None
        self._handles = [layer.down.register_forward_pre_hook(self._hook(layer.index)) for layer in layout.layers]

    def _hook(self, index: int) -> Callable:
        def pre_hook(module, args):
            m = self._masks
            if m is None:
                return None
            x = args[0]
            if self._record is not None:
                self._record(index, x.detach())
            mi = m[:, index] if m.dim() == 3 else m[index].unsqueeze(0)
            if mi.shape[0] not in (1, x.shape[0]):
                raise IfpruneError(f"mask batch {mi.shape[0]} does not match the input batch {x.shape[0]}")
            keep = None
            if self.compensate is not None:  # every row of a top-k mask has exactly k nonzeros
                on = mi != 0
                if bool((on.sum(-1) != on[0].sum()).any()):
                    raise IfpruneError("compensated masks must keep the same number of channels in every row")
                keep = on.nonzero()[:, 1].reshape(mi.shape[0], -1).expand(x.shape[0], -1)
            full = x
            mi = mi.to(dtype=x.dtype).reshape(mi.shape[0], *([1] * (x.dim() - 2)), mi.shape[-1])
            x = x * mi
            if keep is not None:
                with torch.autocast(x.device.type, enabled=False):
                    x = self.compensate(index, x, keep)
            if self._dense is not None:
                x = torch.where(self._dense.unsqueeze(-1), full, x.to(full.dtype))
            return (x, *args[1:])

        return pre_hook

    @contextlib.contextmanager
    def apply(self, masks: torch.Tensor, record: Callable[[int, torch.Tensor], None] | None = None,
              dense: torch.Tensor | None = None) -> Iterator[None]:
        """With `record`, also call `record(layer_index, activation)` with each layer's activation
        before its mask (detached): what every channel, kept or not, would contribute here. `dense`
        [batch, tokens] (bool): positions that keep every channel, as a dense prefill reads them."""
        L, d = self.layout.num_layers, self.layout.d_ffn
        if masks.shape[-2:] != (L, d) or masks.dim() not in (2, 3):
            raise IfpruneError(f"masks must be [batch, {L}, {d}] or [{L}, {d}], got {tuple(masks.shape)}")
        if dense is not None and (dense.dim() != 2 or dense.dtype != torch.bool):
            raise IfpruneError(f"dense positions must be a [batch, tokens] bool tensor, got {tuple(dense.shape)} {dense.dtype}")
        prev, self._masks = self._masks, masks
        prev_rec, self._record = self._record, record
        prev_dense, self._dense = self._dense, dense
        try:
            yield
        finally:
            self._masks = prev
            self._record = prev_rec
            self._dense = prev_dense

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


@contextlib.contextmanager
def record_intermediates(layout: FFNLayout, fn: Callable[[int, torch.Tensor], None]) -> Iterator[None]:
    """Call `fn(layer_index, activation)` with each layer's FFN intermediate activation [..., d_ffn]."""

    def make(index: int):
        def pre_hook(module, args):
            fn(index, args[0].detach())

        return pre_hook

    handles = [layer.down.register_forward_pre_hook(make(layer.index)) for layer in layout.layers]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class _Stop(Exception):
    pass


def forward_until(block: torch.nn.Module, forward: Callable[[], object]) -> torch.Tensor:
    """Run `forward()` (a model call) only until `block` has run; returns the block's output hidden
    states. Raises IfpruneError if the block never ran."""
    seen: list[torch.Tensor] = []

    def stop(module, args, output):
        seen.append(output[0] if isinstance(output, tuple) else output)
        raise _Stop

    handle = block.register_forward_hook(stop)
    try:
        forward()
    except _Stop:
        pass
    finally:
        handle.remove()
    if not seen:
        raise IfpruneError("the forward pass never reached the block it should stop after")
    return seen[0]
