"""Re-selection from what the compact model read ("kept" prefill): no dense pass over the answer.

With "dense-answer" each re-selection runs the full model over the answer tokens since the last one: GRIFFIN
needs every channel's activation there, and the pass's KV cache then serves the next segment. On the CPU that
pass costs more per token than pruning saves per decoded token (results/speed/). Most of it is not needed:
GRIFFIN's scores are a function of each token's FFN *input* through the full gate/up projections alone, the
compact model computes that input at every token it reads anyway, and it computes the kept channels' share of
those activations too. So "kept" records, while the compact model decodes, each layer's FFN input and what it
fed its down projection, and at a re-selection runs only the dropped channels' gate and up rows over those
inputs: no attention, no down projection, no KV cache to copy. The answer's KV cache is the one the compact
models wrote while decoding it, kept across plans; the prompt's is the full model's, as with a dense prefill.

The scores then come from the compact model's trajectory rather than the full model's: a change of the
method, measured against dense-answer in results/refresh/kept/.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F

from ..core.hooks import _Stop
from .selectors import griffin_squares


class AnswerInputs:
    """Each layer's FFN inputs over the answer tokens a compact model reads, in order, and (where the compact
    model's down projection is a module of its own) the activations it fed that projection: the kept channels'
    share of the full FFN's, which a re-selection then need not compute again.

    `skip` (record): leading tokens of the first call not to keep (the prompt's last token, read by the compact
    model first: the prompt's squares already count it)."""

    def __init__(self, num_layers: int):
        self.rows: list[list[torch.Tensor]] = [[] for _ in range(num_layers)]
        self.acts: list[list[torch.Tensor]] = [[] for _ in range(num_layers)]

    def append(self, i: int, x: torch.Tensor, act: torch.Tensor) -> None:
        """Layer `i`'s FFN input and down-projection input at the tokens just read (a decoder's own recorder)."""
        self.rows[i].append(x)
        self.acts[i].append(act)

    @contextlib.contextmanager
    def record(self, layout, skip: int = 0, engine=None) -> Iterator[None]:
        """Record the FFN inputs (and down-projection inputs) of `layout`'s model (the compact one) while it runs;
        batch of one. `engine`: a decoder that calls a recorder itself (runtime.lean), else module hooks, which
        only keep a reference (they run at every layer of every decoded token); `take` assembles the rows."""
        start = [(len(rows), len(acts)) for rows, acts in zip(self.rows, self.acts)]

        def make(rows: list):
            return lambda module, args: rows.append(args[0])

        handles = []
        if engine is not None:
            engine.record = self.append
        else:
            for layer in layout.layers:
                handles.append(layer.mlp.register_forward_pre_hook(make(self.rows[layer.index])))
                handles.append(layer.down.register_forward_pre_hook(make(self.acts[layer.index])))
        try:
            yield
        finally:
            for h in handles:
                h.remove()
            if engine is not None:
                engine.record = None
        for lists, (s_rows, s_acts) in zip(zip(self.rows, self.acts), start):
            for rows, s in zip(lists, (s_rows, s_acts)):
                if skip and len(rows) > s:
                    first = rows[s].reshape(-1, rows[s].shape[-1])[skip:]  # the prompt's last token(s): counted
                    rows[s] = first.unsqueeze(0)

    def take(self) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        """(each layer's FFN inputs [tokens, hidden], each layer's down-projection inputs [tokens, width] or None
        when they were not seen for every token) since the last take; recording starts afresh."""
        def cat(lists):
            return [torch.cat([r.reshape(-1, r.shape[-1]) for r in rows]).float() if rows else torch.zeros(0)
                    for rows in lists]

        out, acts = cat(self.rows), cat(self.acts)
        self.rows = [[] for _ in self.rows]
        self.acts = [[] for _ in self.acts]
        if len({x.shape[0] for x in out}) != 1:  # every layer reads every token
            raise RuntimeError(f"internal: FFN inputs recorded unevenly across layers: {[x.shape[0] for x in out]}")
        return out, (acts if all(a.shape[0] == x.shape[0] for a, x in zip(acts, out)) else None)


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


def _rows_of(mod, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """`mod`'s outputs [tokens, len(rows)] at `x` for its output rows `rows` only (a linear, or an int8 one)."""
    if hasattr(mod, "rows"):  # core.quantized.Int8Linear
        return mod.rows(x.float(), rows).float()
    y = F.linear(x.to(mod.weight.dtype), mod.weight.index_select(0, rows)).float()
    return y if mod.bias is None else y + mod.bias.index_select(0, rows).float()


def kept_squares(lm, inputs: list[torch.Tensor], acts: list[torch.Tensor] | None,
                 slots: torch.Tensor | None) -> torch.Tensor:
    """`full_squares`, computing only the channels the compact model did not: its own activations `acts` (each
    layer's [tokens, width], slot `s` holding full channel `slots[layer, s]`) are the kept channels' share, so only
    the dropped ones run through the gate and up rows (a quarter of the full FFN's first half at keep 3/4).
    Models whose MLP is not a separate gate and up with an `act_fn` (or no activations seen) run `full_squares`."""
    layers = lm.reader()[1].layers
    if (acts is None or slots is None or lm.layout.family.name != "gated"
            or not all(hasattr(layer.mlp, "act_fn") for layer in layers)):
        return full_squares(lm, inputs)
    out = torch.zeros(lm.num_layers, lm.d_ffn)
    with torch.no_grad():
        for layer, x, a, s in zip(layers, inputs, acts, slots):
            if not x.numel():
                continue
            dropped = torch.ones(lm.d_ffn, dtype=torch.bool)
            dropped[s] = False
            rows = dropped.nonzero().squeeze(1).to(x.device)
            gate, up = layer.up
            full = torch.empty(x.shape[0], lm.d_ffn)
            full[:, s] = a.cpu()
            if rows.numel():
                full[:, rows.cpu()] = (layer.mlp.act_fn(_rows_of(gate, x, rows)) * _rows_of(up, x, rows)).cpu()
            out[layer.index] = griffin_squares(full.unsqueeze(0))[0]
    return out


class KeptReselection:
    """The running state of "kept" re-selection over one answer: GRIFFIN's squared sums so far (the prompt's, then
    each segment's FFN inputs added at its re-selection) and the inputs the current segment records."""

    def __init__(self, lm, prompt_squares: torch.Tensor):
        self.lm = lm
        self.squares = prompt_squares.clone()
        self.inputs = AnswerInputs(lm.num_layers)
        self._slots: torch.Tensor | None = None

    def record(self, compact, first: bool, engine=None):
        """Record while `compact` (a core.compact.CompactModel with a plan loaded) reads a segment, through `engine`
        when it is a decoder that records (runtime.lean); the first segment starts with the prompt's last token."""
        self._slots = compact.channels()
        return self.inputs.record(compact.compact_layout, skip=int(first), engine=engine)

    def next_plan(self, selector, text: str | None, width: int, after: int, tokens: int):
        """The plan for the next segment, from everything read so far (`tokens`: prompt + answer so far)."""
        from .refresh import squares_plan

        inputs, acts = self.inputs.take()
        self.squares += kept_squares(self.lm, inputs, acts, self._slots)
        return squares_plan(self.lm, selector, text, self.squares, width, after, tokens)
