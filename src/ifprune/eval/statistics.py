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


def paired(a_rows: list[dict], b_rows: list[dict], **kw) -> dict | None:
    """Row b's primary metric minus row a's over the examples both scored over the same denominator (matched by id;
    an NLL row that cut an example elsewhere scored other tokens of it and is left out, counted in `unpaired`), with
    a bootstrap interval of the per-example differences: the spread between examples, which each row's own interval
    carries, cancels. `separated` (the interval excludes 0) needs MIN_PAIRED pairs. None when no example pairs."""
    a = {r["id"]: r for r in a_rows}
    shared = [(a[r["id"]], r) for r in b_rows if r["id"] in a]
    both = [(x, y) for x, y in shared if x["den"] == y["den"]]
    if not both:
        return None
    diff, den = [y["num"] - x["num"] for x, y in both], [x["den"] for x, _ in both]
    lo, hi = bootstrap_ci(diff, den, **kw)
    return {"n": len(both), "unpaired": len(shared) - len(both), "b_minus_a": ratio(diff, den), "ci95": [lo, hi],
            "separated": len(both) >= MIN_PAIRED and not lo <= 0 <= hi}


MIN_PAIRED = 10  # fewer pairs than this: a bootstrap interval is too unsure to call two rows apart
