"""Weight-only int8 linears for the compact model on the CPU.

Decoding one token reads every weight once, so on a CPU its time is the bytes of weights it moves: int8
rows with one scale each move a quarter of float32's. The scale layout is chosen so that channel
selection commutes with quantization: a gate/up row is one FFN channel and carries its own scale (a
kept channel is a kept row, bit for bit), and the down projection's scales are per output row over the
*full* input width, so gathering a plan's columns never changes them. The full model is quantized once
(`QuantizedWeights`) and every plan gathers int8 rows and columns from it.

Tokens are multiplied by torch's packed int8 kernel while there are few of them (decoding); a prompt's
many tokens go through a bfloat16 product of the dequantized weights, where the kernel for one token
is slower than a matrix product.
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.nn import functional as F

from .errors import IfpruneError

QUANTS = ("int8",)  # the torch runtime's weight types (None: the weights as loaded)
_PACKED_MAX_TOKENS = 8  # up to this many tokens per product: the packed int8 kernel
PACKED_MULTIPLE = 16  # the packed kernel needs in_features a multiple of this (it crashes the process otherwise)


def check_quant(quant: str | None) -> str | None:
    if quant is None or quant in ("none", "fp32"):
        return None
    if quant not in QUANTS:
        raise IfpruneError(f"the torch runtime runs --quant {', '.join(QUANTS)} (or none), not {quant!r}")
    if not int8_available():
        raise IfpruneError("this torch build has no CPU int8 weight kernel (aten._weight_int8pack_mm): "
                           "run without --quant, or with --runtime llamacpp --quant q8_0")
    return quant


def default_quant(device) -> str | None:
    """What answers by default on `device`: int8 on the CPU where this torch build has the kernel, else the loaded
    weights (None)."""
    return "int8" if str(device).startswith("cpu") and int8_available() else None


@functools.lru_cache(maxsize=None)
def int8_available() -> bool:
    op = getattr(torch.ops.aten, "_weight_int8pack_mm", None)
    if op is None:
        return False
    try:
        op(torch.zeros(1, PACKED_MULTIPLE, dtype=torch.bfloat16), torch.zeros(2, PACKED_MULTIPLE, dtype=torch.int8),
           torch.ones(2, dtype=torch.bfloat16))
    except (RuntimeError, NotImplementedError):
        return False
    return True


def quantize_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per row of `w` [out, in]: (int8 [out, in], bfloat16 scales [out]); an all-zero row
    keeps scale 1 so that it dequantizes to zeros."""
    w = w.detach().float()
    scale = (w.abs().amax(dim=1) / 127.0).to(torch.bfloat16)
    s = scale.float()
    s[s == 0] = 1.0
    q = torch.clamp(torch.round(w / s[:, None]), -127, 127).to(torch.int8).contiguous()
    return q, s.to(torch.bfloat16)


def _linear_weight(mod: nn.Module) -> torch.Tensor:
    """[out, in], whatever the module stores (GPT-2's Conv1D keeps [in, out])."""
    from .ffn import Conv1D

    return mod.weight.T if isinstance(mod, Conv1D) else mod.weight


def is_linear(mod: nn.Module) -> bool:
    from .ffn import Conv1D

    return isinstance(mod, nn.Linear) or (isinstance(Conv1D, type) and isinstance(mod, Conv1D))


PRODUCT_VERSION = 2  # how Int8Linear computes (2: row scales after the many-token product); in eval cache keys


def _dequantized_product(xb: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, dtype) -> torch.Tensor:
    """x W^T at bfloat16 with the row scales multiplying the product, not the weights: one pass over them, not two."""
    return F.linear(xb, qweight.to(torch.bfloat16)).to(dtype) * scale.to(dtype)


class Int8Linear(nn.Module):
    """y = x W^T + b with W stored as int8 rows times one bfloat16 scale per row; the output is in x's dtype."""

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("qweight", qweight, persistent=False)
        self.register_buffer("scale", scale, persistent=False)
        if bias is None or isinstance(bias, nn.Parameter):
            self.register_parameter("bias", bias)  # (a full model's bias is shared, as float compact models do)
        else:
            self.bias = nn.Parameter(bias, requires_grad=False)
        self.out_features, self.in_features = qweight.shape
        # another width (e.g. a down projection of --width 1000) takes the dequantized product: right, slower
        self.packed = self.in_features % PACKED_MULTIPLE == 0

    @classmethod
    def of(cls, mod: nn.Module) -> "Int8Linear":
        q, s = quantize_rows(_linear_weight(mod))
        return cls(q, s, mod.bias)

    def set_weight(self, w: torch.Tensor) -> None:
        """Quantize `w` [out, in] into this module's own buffers (a refit down projection)."""
        q, s = quantize_rows(w)
        self.qweight.copy_(q)
        self.scale.copy_(s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        xb = x.reshape(-1, shape[-1]).to(torch.bfloat16)
        if self.packed and xb.shape[0] <= _PACKED_MAX_TOKENS:
            y = torch.ops.aten._weight_int8pack_mm(xb, self.qweight, self.scale).to(x.dtype)
        else:
            y = _dequantized_product(xb, self.qweight, self.scale, x.dtype)
        y = y.reshape(*shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias

    def rows(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The outputs [tokens, len(rows)] at `x` [tokens, in] of output rows `rows` only, by the many-token product
        (a re-selection's dropped channels: selection.decoded)."""
        y = _dequantized_product(x.to(torch.bfloat16), self.qweight.index_select(0, rows),
                                 self.scale.index_select(0, rows), x.dtype)
        return y if self.bias is None else y + self.bias.index_select(0, rows)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per row"


class Source:
    """A quantized full-model tensor that carries FFN channels along `dim` (the gather's source; the same
    interface as ffn.ChannelTensor)."""

    def __init__(self, tensor: torch.Tensor, dim: int, fused: bool = False):
        self.tensor, self.dim, self.fused = tensor, dim, fused

    def rows_for(self, channels: torch.Tensor, d_ffn: int) -> torch.Tensor:
        return torch.cat([channels, channels + d_ffn]) if self.fused else channels


class QuantizedWeights:
    """The full model's weights at int8, made once per loaded model: each FFN projection (what plans gather
    from) and every other linear, LM head included (shared by all compact models, as their float tensors are)."""

    def __init__(self, full: nn.Module, layout):
        self.layout = layout
        ffn_ids = {id(m) for layer in layout.layers for m in (*layer.up, layer.down)}
        with torch.no_grad():
            self.ffn = [self._layer(layer) for layer in layout.layers]
            self.other = {name: Int8Linear.of(mod) for name, mod in full.named_modules()
                          if is_linear(mod) and id(mod) not in ffn_ids}

    @staticmethod
    def _layer(layer) -> dict:
        """{'up': [(int8, scales, bias) per up module], 'down': (int8, scales, bias)}."""
        up = [(*quantize_rows(_linear_weight(m)), m.bias) for m in layer.up]
        return {"up": up, "down": (*quantize_rows(_linear_weight(layer.down)), layer.down.bias)}

    def nbytes(self) -> int:
        def size(t):
            return t.numel() * t.element_size() if t is not None else 0

        ffn = sum(size(q) + size(s) for layer in self.ffn for q, s, _ in (*layer["up"], layer["down"]))
        return ffn + sum(size(m.qweight) + size(m.scale) for m in self.other.values())


def int8_compact(model: nn.Module, clayout, layout, store: QuantizedWeights, width: int) -> list:
    """Swap `model`'s linears (a compact model of `width`) for int8 ones: the FFN projections get buffers of the
    compact width (at the full width, the store's own tensors: a dense plan is the identity), every other linear is
    the store's shared module. Returns, per layer, the (source, buffer) pairs
    a plan's load gathers, in the order `CompactModel` gathers float tensors."""
    fam = layout.family
    full = width == layout.d_ffn  # every channel: the store's own tensors, read in place (nothing to gather)
    pairs = []
    for fl, cl, q in zip(layout.layers, clayout.layers, store.ffn):
        layer_pairs = []
        if full:
            for name, (qw, s, b) in zip(fam.up, q["up"]):
                setattr(cl.mlp, name, Int8Linear(qw, s, b))
            setattr(cl.mlp, fam.down, Int8Linear(*q["down"]))
            pairs.append(layer_pairs)
            continue
        for name, (qw, s, b) in zip(fam.up, q["up"]):
            rows = width * (2 if fam.fused else 1)
            mod = Int8Linear(torch.empty(rows, qw.shape[1], dtype=torch.int8), torch.empty(rows, dtype=s.dtype),
                             None if b is None else torch.empty(rows, dtype=b.dtype))
            setattr(cl.mlp, name, mod)
            layer_pairs += [(Source(qw, 0, fam.fused), mod.qweight), (Source(s, 0, fam.fused), mod.scale)]
            if b is not None:
                layer_pairs.append((Source(b, 0, fam.fused), mod.bias))
        qw, s, b = q["down"]
        down = Int8Linear(torch.empty(qw.shape[0], width, dtype=torch.int8), s.clone(), b)
        setattr(cl.mlp, fam.down, down)
        layer_pairs.append((Source(qw, 1), down.qweight))
        pairs.append(layer_pairs)
    for name, mod in store.other.items():
        owner, _, attr = name.rpartition(".")
        setattr(model.get_submodule(owner) if owner else model, attr, mod)
    return pairs
