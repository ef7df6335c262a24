"""Whether this machine runs bf16 matmuls faster than float32: training's autocast and the
compensation moments pass both ask, and the answer must be measured, not read off the CPU flags."""

from __future__ import annotations

import time

import torch

_BF16_FASTER: bool | None = None


def cpu_has_fast_bf16() -> bool:
    """Whether bf16 matmuls beat float32 on this CPU, measured once per process on an FFN-shaped
    product (~0.1 s). Having the instructions is not enough: a 2-core AMD EPYC (AVX2 only) emulates
    bf16 (a training step took 143 s against 6 s in float32, results/training/speed.md), and a
    2-core Xeon with AVX-512 BF16 but no AMX ran the product in 6.4 ms bf16 vs 4.3 ms float32."""
    global _BF16_FASTER
    if _BF16_FASTER is None:
        cpu = getattr(torch, "cpu", None)
        checks = [getattr(cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
        _BF16_FASTER = any(bool(c()) for c in checks if callable(c)) and _bf16_matmul_faster()
    return _BF16_FASTER


def _bf16_matmul_faster(repeats: int = 5) -> bool:
    def best(dtype):
        a, w = torch.randn(256, 576, dtype=dtype), torch.randn(1536, 576, dtype=dtype)
        a @ w.t()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ w.t()
            times.append(time.perf_counter() - t0)
        return min(times)

    return best(torch.bfloat16) < best(torch.float32)
