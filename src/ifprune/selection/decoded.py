"""Re-selection from what the compact model read ("kept" prefill): no dense pass over the answer.

With "dense-answer" each re-selection runs the full model over the answer tokens since the last one: GRIFFIN
needs every channel's activation there, and the pass's KV cache then serves the next segment. On the CPU that
pass is the largest cost re-selection adds (results/speed/). Its expensive half is not needed: GRIFFIN's
scores are a function of each token's FFN *input* through the full gate/up projections alone, and the compact
model computes that input at every token it reads anyway. So "kept" records each layer's FFN input while the
compact model decodes, and at a re-selection runs only the full FFN's first half (up to the down projection's
input) over those rows: no attention, no down projection, no KV cache to copy. The answer's KV cache is the
one the compact models wrote while decoding it, kept across plans; the prompt's is the full model's, as with a
dense prefill.

The scores then come from the compact model's trajectory rather than the full model's: a change of the
method, measured against dense-answer in results/refresh/kept/.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from ..core.hooks import _Stop
from .selectors import griffin_squares


class AnswerInputs:
    """Each layer's FFN inputs over the answer tokens a compact model reads, in order.

    `skip` (record): leading tokens of the first call not to keep (the prompt's last token, read by the compact
    model first: the prompt's squares already count it)."""

    def __init__(self, num_layers: int):
        self.rows: list[list[torch.Tensor]] = [[] for _ in range(num_layers)]

    @contextlib.contextmanager
    def record(self, layout, skip: int = 0) -> Iterator[None]:
        """Record the FFN inputs of `layout`'s model (the compact one) while it runs; batch of one. The hook only
        keeps a reference (it runs at every layer of every decoded token); `take` assembles the rows."""
        start = [len(rows) for rows in self.rows]

        def make(rows: list):
            return lambda module, args: rows.append(args[0])

        handles = [layer.mlp.register_forward_pre_hook(make(self.rows[layer.index])) for layer in layout.layers]
        try:
            yield
        finally:
            for h in handles:
                h.remove()
        for rows, s in zip(self.rows, start):
            if skip and len(rows) > s:
                first = rows[s][0, skip:]  # the prompt's last token(s): the prompt's squares count them
                rows[s] = first.unsqueeze(0)

    def take(self) -> list[torch.Tensor]:
        """Each layer's rows since the last take, [tokens, hidden]; recording starts afresh."""
        out = [torch.cat([r[0] for r in rows]).float() if rows else torch.zeros(0) for rows in self.rows]
        self.rows = [[] for _ in self.rows]
        if len({x.shape[0] for x in out}) != 1:  # every layer reads every token
            raise RuntimeError(f"internal: FFN inputs recorded unevenly across layers: {[x.shape[0] for x in out]}")
        return out


def full_squares(lm, inputs: list[torch.Tensor]) -> torch.Tensor:
    """GRIFFIN's squared column sums [layers, d_ffn] of the full model's FFN activations at `inputs` (each
    layer's [tokens, hidden] FFN inputs): each layer's MLP runs only up to its down projection's input."""
    out = torch.zeros(lm.num_layers, lm.d_ffn)
    seen: list[torch.Tensor] = []

    def stop(module, args):
        seen.append(args[0])
        raise _Stop

    with torch.no_grad():
        for layer, x in zip(lm.layout.layers, inputs):
            if not x.numel():
                continue
            h = layer.down.register_forward_pre_hook(stop)
            try:
                layer.mlp(x.unsqueeze(0).to(lm.device, next(layer.down.parameters()).dtype))
            except _Stop:
                pass
            finally:
                h.remove()
            out[layer.index] = griffin_squares(seen.pop())[0].cpu()
    return out


class KeptReselection:
    """The running state of "kept" re-selection over one answer: GRIFFIN's squared sums so far (the prompt's, then
    each segment's FFN inputs added at its re-selection) and the inputs the current segment records."""

    def __init__(self, lm, prompt_squares: torch.Tensor):
        self.lm = lm
        self.squares = prompt_squares.clone()
        self.inputs = AnswerInputs(lm.num_layers)

    def record(self, layout, first: bool):
        """Record while `layout`'s compact model reads a segment; the first one starts with the prompt's last token."""
        return self.inputs.record(layout, skip=int(first))

    def next_plan(self, selector, text: str | None, width: int, after: int, tokens: int):
        """The plan for the next segment, from everything read so far (`tokens`: prompt + answer so far)."""
        from .refresh import squares_plan

        self.squares += full_squares(self.lm, self.inputs.take())
        return squares_plan(self.lm, selector, text, self.squares, width, after, tokens)
