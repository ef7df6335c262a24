"""Counters, gauges and summaries for /metrics (Prometheus text format) and for load-test reports."""

from __future__ import annotations

import threading
from collections import defaultdict, deque


class Metrics:
    def __init__(self, window: int = 2048):
        self._lock = threading.Lock()
        self.counters: dict[str, float] = defaultdict(float)
        self.gauges: dict[str, float] = defaultdict(float)
        self._obs: dict[str, deque] = defaultdict(lambda: deque(maxlen=window))
        self._sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])

    def inc(self, name: str, by: float = 1.0) -> None:
        with self._lock:
            self.counters[name] += by

    def set_gauge(self, name: str, value: float) -> None:
        with self._lock:
            self.gauges[name] = value

    def observe(self, name: str, value: float) -> None:
        with self._lock:
            self._obs[name].append(value)
            s = self._sums[name]
            s[0] += value
            s[1] += 1

    def quantile(self, name: str, q: float) -> float | None:
        with self._lock:
            vals = sorted(self._obs.get(name, ()))
        return quantile(vals, q)

    def render(self, prefix: str = "ifprune_") -> str:
        lines = []
        with self._lock:
            for k, v in sorted(self.counters.items()):
                lines += [f"# TYPE {prefix}{k} counter", f"{prefix}{k} {v:g}"]
            for k, v in sorted(self.gauges.items()):
                lines += [f"# TYPE {prefix}{k} gauge", f"{prefix}{k} {v:g}"]
            obs = {k: sorted(v) for k, v in self._obs.items()}
            sums = {k: tuple(v) for k, v in self._sums.items()}
        for k, vals in sorted(obs.items()):
            lines.append(f"# TYPE {prefix}{k} summary")
            for q in (0.5, 0.9, 0.99):
                val = quantile(vals, q)
                if val is not None:
                    lines.append(f'{prefix}{k}{{quantile="{q}"}} {val:g}')
            lines += [f"{prefix}{k}_sum {sums[k][0]:g}", f"{prefix}{k}_count {sums[k][1]}"]
        return "\n".join(lines) + "\n"


def quantile(sorted_vals, q: float) -> float | None:
    """Nearest-rank quantile of an ascending list (None when empty)."""
    if not sorted_vals:
        return None
    i = min(len(sorted_vals) - 1, max(0, int(round(q * len(sorted_vals) + 0.5)) - 1))
    return float(sorted_vals[i])
