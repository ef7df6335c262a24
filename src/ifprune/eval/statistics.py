"""Aggregates with 95% bootstrap intervals. Every suite reduces an example to a numerator and a
denominator (correct/1, or summed NLL/tokens), so one ratio-of-sums bootstrap serves them all."""

from __future__ import annotations

import numpy as np


def ratio(num, den) -> float:
    d = float(np.sum(den))
    return float(np.sum(num)) / d if d > 0 else float("nan")


def bootstrap_ci(num, den=None, *, samples: int = 2000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile interval of sum(num)/sum(den) over examples resampled with replacement."""
    num = np.asarray(num, dtype=np.float64)
    den = np.ones_like(num) if den is None else np.asarray(den, dtype=np.float64)
    n = num.size
    if n == 0:
        return float("nan"), float("nan")
    if n == 1:
        v = ratio(num, den)
        return v, v
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(samples, n))
    dsum = den[idx].sum(1)
    stats = np.where(dsum > 0, num[idx].sum(1) / np.where(dsum > 0, dsum, 1), np.nan)
    lo, hi = np.nanpercentile(stats, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def summarise(num, den=None, **kw) -> dict:
    den_ = [1.0] * len(num) if den is None else den
    lo, hi = bootstrap_ci(num, den_, **kw)
    return {"value": ratio(num, den_), "ci95": [lo, hi], "n": len(num)}
