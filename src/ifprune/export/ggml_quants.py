"""GGML block quantisation of weight rows in torch, byte for byte what the `gguf` package writes.

The `gguf` package's quantisers are numpy loops over blocks, too slow to run on every plan switch of
the llama.cpp runtime (runtime.llamacpp quantises the down projection per plan). These are the same
formulas vectorised over whole tensors; tests/test_ggml_quants.py holds them equal to `gguf.quants`.
Blocks run along the last (input) dimension, so rows of a quantised matrix can be gathered as bytes.
"""

from __future__ import annotations

import torch

from ..core.errors import IfpruneError

BLOCK = 32  # values per block of every type here
BYTES = {"Q8_0": 34, "Q4_0": 18, "Q4_1": 20}  # bytes per block


def row_bytes(qtype: str, cols: int) -> int:
    return cols // BLOCK * BYTES[qtype]


def _roundf(x: torch.Tensor) -> torch.Tensor:
    """Round half away from zero, as ggml's reference (and gguf.quants.np_roundf) does (in place, on the
    per-plan path: fewer temporaries)."""
    a = x.abs()
    fl = torch.floor(a)
    a.sub_(fl).mul_(2).floor_().add_(fl)
    return a.mul_(torch.sign(x))


def _f16_bytes(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float16).contiguous().view(torch.uint8)


def _inverse(d: torch.Tensor) -> torch.Tensor:
    return torch.where(d == 0, torch.zeros_like(d), 1 / d)


def _pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    """[..., 32] values 0..15 -> [..., 16] bytes: value i in the low nibble of byte i, value 16 + i in the high."""
    q = q.to(torch.uint8)
    return q[..., :16] | (q[..., 16:] << 4)


def quantize_rows(w: torch.Tensor, qtype: str) -> torch.Tensor:
    """[rows, cols] floats -> [rows, row_bytes] uint8 in GGML's `qtype` layout (cols a multiple of 32)."""
    if qtype not in BYTES:
        raise IfpruneError(f"no row quantiser for {qtype}; have {', '.join(BYTES)}")
    if w.dim() != 2 or w.shape[1] % BLOCK:
        raise IfpruneError(f"{qtype} quantises rows whose length is a multiple of {BLOCK}, got shape {tuple(w.shape)}")
    rows, cols = w.shape
    b = w.detach().to(torch.float32).reshape(rows, cols // BLOCK, BLOCK)
    if qtype == "Q8_0":
        d = b.abs().amax(-1, keepdim=True) / 127
        q = _roundf(b * _inverse(d)).to(torch.int8).view(torch.uint8)
        out = torch.cat([_f16_bytes(d), q], dim=-1)
    elif qtype == "Q4_0":
        mx = torch.gather(b, -1, b.abs().argmax(-1, keepdim=True))  # the value of largest magnitude, signed
        d = mx / -8
        q = torch.trunc(b * _inverse(d) + 8.5).clamp(0, 15)
        out = torch.cat([_f16_bytes(d), _pack_nibbles(q)], dim=-1)
    else:  # Q4_1
        mx, mn = b.amax(-1, keepdim=True), b.amin(-1, keepdim=True)
        d = (mx - mn) / 15
        q = torch.trunc((b - mn) * _inverse(d) + 0.5).clamp(0, 15)
        out = torch.cat([_f16_bytes(d), _f16_bytes(mn), _pack_nibbles(q)], dim=-1)
    return out.reshape(rows, -1)
