"""Weight-only quantization: int8 (one scale per output row) and group-wise int4 (one scale per
`group_size` inputs of a row), both symmetric round-to-nearest.

Symmetric on purpose: zero is exactly representable, so a 2:4-pruned weight stays 2:4 after
quantization, and the dequantized values are what every later step (plans, 2:4 re-imposition,
evaluation) sees. Plans compose without requantizing: gate/up keep whole rows (and their groups);
down's int8 scales are per row, so gathered columns are exact; down's int4 groups run along d_ffn,
so gathered columns keep their own stored scale (exact in the dequantizing path; an int4 *kernel*
for a compact down would need a requantization, see docs/compression.md).

Two execution paths: the dequantizing reference (`QuantizedWeight.dequantize`, any device), and the
weight-only int matmuls the installed PyTorch offers (`torch._weight_int8pack_mm`,
`torch._weight_int4pack_mm_for_cpu`, on CUDA `torch._weight_int4pack_mm`), used by `QuantLinear`
only after they reproduce the reference on a probe input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..core.errors import IfpruneError

SCHEMES = ("int8", "int4")
INT4_GROUPS = (32, 64, 128, 256)


@dataclass
class QuantizedWeight:
    bits: int
    group_size: int  # inputs per scale; for int8 the whole row
    shape: tuple[int, int]
    codes: torch.Tensor  # int8 [out, in] (8-bit) or uint8 [out, in/2] (4-bit, two codes+8 per byte)
    scales: torch.Tensor  # float32 [out, in / group_size]

    def int_codes(self) -> torch.Tensor:
        """Signed integer codes [out, in] (int8 storage for both widths)."""
        if self.bits == 8:
            return self.codes
        lo = (self.codes & 0x0F).to(torch.int8) - 8
        hi = (self.codes >> 4).to(torch.int8) - 8
        return torch.stack([lo, hi], dim=-1).reshape(self.shape)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        out, inp = self.shape
        q = self.int_codes().float().reshape(out, inp // self.group_size, self.group_size)
        return (q * self.scales.float().unsqueeze(-1)).reshape(out, inp).to(dtype)

    def to(self, device) -> "QuantizedWeight":
        return QuantizedWeight(self.bits, self.group_size, self.shape, self.codes.to(device), self.scales.to(device))

    def nbytes(self) -> int:
        return self.codes.numel() * self.codes.element_size() + self.scales.numel() * self.scales.element_size()

    # serialisation -----------------------------------------------------------------------------
    def tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}.qcodes": self.codes.contiguous(), f"{prefix}.qscales": self.scales.contiguous()}

    def spec(self) -> dict:
        return {"bits": self.bits, "group_size": self.group_size, "shape": list(self.shape)}

    @classmethod
    def from_tensors(cls, prefix: str, spec: dict, tensors: dict[str, torch.Tensor]) -> "QuantizedWeight":
        """Rebuild and validate; a missing or mis-shaped tensor means a corrupted or mismatched file."""
        try:
            bits, group, (out, inp) = int(spec["bits"]), int(spec["group_size"]), spec["shape"]
            codes, scales = tensors[f"{prefix}.qcodes"], tensors[f"{prefix}.qscales"]
        except (KeyError, TypeError, ValueError) as e:
            raise IfpruneError(f"quantized tensor {prefix} is missing or malformed ({e!r}); the compressed "
                               "files are incomplete or from another model: re-run ifprune compress") from None
        want_codes = (out, inp) if bits == 8 else (out, inp // 2)
        want_dtype = torch.int8 if bits == 8 else torch.uint8
        if (bits not in (4, 8) or group < 1 or inp % group or tuple(codes.shape) != want_codes
                or codes.dtype != want_dtype or tuple(scales.shape) != (out, inp // group)):
            raise IfpruneError(
                f"quantized tensor {prefix} does not match its manifest (codes {tuple(codes.shape)} {codes.dtype}, "
                f"scales {tuple(scales.shape)}; expected {want_codes} {want_dtype}, {(out, inp // max(group, 1))}): "
                "the file is corrupted or mismatched; re-run ifprune compress"
            )
        if not torch.isfinite(scales).all():
            raise IfpruneError(f"quantized tensor {prefix} has non-finite scales: the file is corrupted")
        return cls(bits, group, (out, inp), codes, scales.float())


def _check_weight(weight: torch.Tensor, name: str) -> None:
    if weight.dim() != 2:
        raise IfpruneError(f"{name}: only 2-D linear weights can be quantized, got shape {tuple(weight.shape)}")
    if not weight.is_floating_point():
        raise IfpruneError(f"{name}: weight dtype {weight.dtype} is not floating point; quantize the original model")


def quantize(weight: torch.Tensor, scheme: str, group_size: int = 128, name: str = "weight") -> QuantizedWeight:
    """Round-to-nearest symmetric quantization of a [out, in] weight."""
    if scheme not in SCHEMES:
        raise IfpruneError(f"unknown quantization {scheme!r}; choose from {', '.join(SCHEMES)}")
    _check_weight(weight, name)
    w = weight.detach().float().cpu()
    out, inp = w.shape
    if scheme == "int8":
        return encode(w, (w.abs().amax(1, keepdim=True) / 127).clamp_min(1e-12), 8)
    if group_size not in INT4_GROUPS:
        raise IfpruneError(f"int4 group size {group_size} is not supported; use one of {INT4_GROUPS}")
    if inp % group_size:
        raise IfpruneError(f"{name} has {inp} inputs, not a multiple of the int4 group size {group_size}; "
                           f"use a group size that divides it (one of {INT4_GROUPS})")
    return encode(w, (w.reshape(out, inp // group_size, group_size).abs().amax(-1) / 7).clamp_min(1e-12), 4)


def encode(weight: torch.Tensor, scales: torch.Tensor, bits: int) -> QuantizedWeight:
    """The symmetric round-to-nearest codes of a [out, in] weight under given [out, in / group] scales:
    what `quantize` stores, and how a dequantized weight (w = q * s) gives its exact codes back."""
    w = weight.detach().float().cpu()
    out, inp = w.shape
    s = scales.detach().float().cpu().reshape(out, -1)
    group = inp // s.shape[1]
    lo, hi = (-127, 127) if bits == 8 else (-8, 7)
    q = (w.reshape(out, -1, group) / s.clamp_min(1e-30).unsqueeze(-1)).round().clamp(lo, hi).reshape(out, inp)
    if bits == 8:
        return QuantizedWeight(8, group, (out, inp), q.to(torch.int8), s)
    u = q.to(torch.int16) + 8  # two codes + 8 per byte, low nibble first
    return QuantizedWeight(4, group, (out, inp), (u[:, 0::2] | (u[:, 1::2] << 4)).to(torch.uint8), s)


class QuantLinear(nn.Module):
    """A linear layer that stores only codes and scales. `kernel` says which path runs: "int8pack",
    "int4pack-cpu", "int4pack-cuda" (PyTorch's weight-only int matmuls) or "dequant" (the reference).

    Kernels are prepared for the device the codes are on (build it there: packed layouts are
    device-specific) and each one is checked once against the dequantizing reference on a probe
    input; a kernel that is missing, refuses the shape or disagrees is not used, and `kernel_note`
    says why. So a wrong guess about a private op's layout costs speed, never correctness.
    """

    def __init__(self, qw: QuantizedWeight, bias: torch.Tensor | None, use_kernel: bool = True):
        super().__init__()
        self.qw = qw
        self.in_features, self.out_features = qw.shape[1], qw.shape[0]
        self.register_buffer("codes", qw.codes, persistent=False)
        self.register_buffer("scales", qw.scales, persistent=False)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.kernel, self.kernel_note = "dequant", "kernels off" if not use_kernel else ""
        if use_kernel:
            self._prepare_kernel()

    def _candidates(self) -> list[str]:
        qw, dev = self.qw, self.qw.codes.device.type
        if qw.bits == 8:
            return ["int8pack"] if hasattr(torch, "_weight_int8pack_mm") else []
        if qw.group_size not in INT4_GROUPS or qw.shape[0] % 16:
            return []
        if dev == "cpu" and hasattr(torch, "_weight_int4pack_mm_for_cpu"):
            return ["int4pack-cpu"]
        if dev == "cuda" and hasattr(torch, "_weight_int4pack_mm"):
            return ["int4pack-cuda"]
        return []

    def _pack(self, kernel: str) -> None:
        qw = self.qw
        if kernel == "int8pack":
            self._int8 = qw.codes.contiguous()
            self._scale8 = qw.scales.reshape(-1).contiguous()
            return
        unsigned = (qw.int_codes().to(torch.int32) + 8).contiguous()  # the kernels' codes are 0..15
        # both compute (code - 8) * scale + zero per group; symmetric => zero = 0
        s = qw.scales.t().contiguous()
        self._sz = torch.stack([s, torch.zeros_like(s)], dim=-1).contiguous()
        if kernel == "int4pack-cpu":
            self._int4 = torch._convert_weight_to_int4pack_for_cpu(unsigned, 1)
        else:  # tinygemm: uint8 [out, in/2], even input in the high nibble; bf16 scales
            packed = ((unsigned[:, 0::2] << 4) | unsigned[:, 1::2]).to(torch.uint8)
            self._int4 = torch._convert_weight_to_int4pack(packed.contiguous(), 8)
            self._sz = self._sz.to(torch.bfloat16)

    def _prepare_kernel(self) -> None:
        notes = []
        for kernel in self._candidates():
            try:
                self._pack(kernel)
                self.kernel = kernel
                x = torch.randn(3, self.in_features, generator=torch.Generator().manual_seed(0))
                x = x.to(self.qw.codes.device, self._probe_dtype())
                got, want = self._matmul(x).float(), x.float() @ self.qw.dequantize().to(x.device).t()
                err = float((got - want).abs().max() / want.abs().max().clamp_min(1e-12))
                if err <= 2e-2:
                    self.kernel_note = f"checked against the reference: max error {err:.1e} of the output's max"
                    return
                notes.append(f"{kernel} disagrees with the reference (max error {err:.2g} of the output's max)")
            except Exception as e:  # a private op may be missing for this device, dtype or shape
                notes.append(f"{kernel} unavailable: {type(e).__name__}: {str(e).splitlines()[0][:160]}")
            self.kernel = "dequant"
        self.kernel_note = "; ".join(notes) or "no int kernel for this device/shape in this PyTorch"

    def _probe_dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.kernel == "int4pack-cuda" else torch.float32

    def _matmul(self, x2: torch.Tensor) -> torch.Tensor:
        if self.kernel == "int8pack":
            return torch._weight_int8pack_mm(x2, self._int8, self._scale8.to(x2.dtype))
        if self.kernel == "int4pack-cpu":
            return torch._weight_int4pack_mm_for_cpu(x2, self._int4, self.qw.group_size, self._sz.to(x2.dtype))
        if self.kernel == "int4pack-cuda":  # tinygemm takes bfloat16 only
            return torch._weight_int4pack_mm(x2.to(torch.bfloat16), self._int4, self.qw.group_size,
                                             self._sz).to(x2.dtype)
        return x2 @ self.qw.dequantize(x2.dtype).to(x2.device).t()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        y = self._matmul(x.reshape(-1, shape[-1]))
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, bits={self.qw.bits}, group={self.qw.group_size}, kernel={self.kernel}"


@torch.no_grad()
def quantize_linears(model: nn.Module, names: list[str], scheme: str, group_size: int = 128) -> dict[str, QuantizedWeight]:
    """Quantize the named linears and write the dequantized values back ("fake quant"), so the model,
    its plans and its compact models compute exactly what the stored codes mean."""
    out = {}
    for n in names:
        mod = model.get_submodule(n)
        qw = quantize(mod.weight, scheme, group_size, name=n)
        mod.weight.copy_(qw.dequantize(mod.weight.dtype).to(mod.weight.device))
        out[n] = qw
    return out


def swap_in_quant_linears(model: nn.Module, qweights: dict[str, QuantizedWeight], use_kernel: bool = True) -> dict:
    """Replace the named nn.Linear modules by QuantLinear (frees their float weights). Returns
    {kernel name: count}."""
    used: dict[str, int] = {}
    for n, qw in qweights.items():
        parent_name, attr = n.rsplit(".", 1) if "." in n else ("", n)
        parent = model.get_submodule(parent_name)
        old = getattr(parent, attr)
        if tuple(old.weight.shape) != qw.shape:
            raise IfpruneError(f"{n} has shape {tuple(old.weight.shape)} but its quantized weight is {qw.shape}")
        new = QuantLinear(qw.to(old.weight.device), old.bias, use_kernel)  # kernels are packed per device
        setattr(parent, attr, new)
        used[new.kernel] = used.get(new.kernel, 0) + 1
    return used
