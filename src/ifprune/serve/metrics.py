"""The server's Prometheus metrics (`prometheus_client`, one registry per server so that several
in-process servers, as in the tests, do not share counters), and a quantile helper for reports."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST  # noqa: F401  (re-exported for the app)

PREFIX = "ifprune_"
COUNTERS = {
    "requests_total": "HTTP requests received on the completion routes",
    "rejected_queue_full_total": "requests answered 429 because the queue was full",
    "client_disconnects_total": "requests whose client went away before the response ended",
    "batches_total": "batches the model worker ran",
    "generated_tokens_total": "completion tokens generated",
}
LABELLED = {"responses_total": ("HTTP responses by status code", ("code",))}
GAUGES = {"queue_depth": "requests waiting for the model worker", "running": "requests in the running batch"}
SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
HISTOGRAMS = {
    "request_seconds": ("time from request to the end of its response", SECONDS),
    "ttft_seconds": ("time from request to its first text", SECONDS),
    "queue_seconds": ("time a request waited before its batch started", SECONDS),
    "selection_seconds": ("plan selection time per request (cached plans included)", SECONDS),
    "batch_seconds": ("wall time of one batch", SECONDS),
    "loading_seconds": ("time gathering a plan's channels into the compact model", SECONDS),
    "refresh_seconds": ("per batch, time re-selecting plans after --refresh answer tokens (loading included)", SECONDS),
    "batch_size": ("requests per batch", (1, 2, 4, 8, 16, 32, 64)),
}


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._m = {name: Counter(PREFIX + name.removesuffix("_total"), doc, registry=r) for name, doc in COUNTERS.items()}
        self._m.update({name: Counter(PREFIX + name.removesuffix("_total"), doc, labels, registry=r)
                        for name, (doc, labels) in LABELLED.items()})
        self._m.update({name: Gauge(PREFIX + name, doc, registry=r) for name, doc in GAUGES.items()})
        self._m.update({name: Histogram(PREFIX + name, doc, buckets=b, registry=r) for name, (doc, b) in HISTOGRAMS.items()})

    def inc(self, name: str, by: float = 1.0, **labels) -> None:
        m = self._m[name]
        (m.labels(**labels) if labels else m).inc(by)

    def set_gauge(self, name: str, value: float) -> None:
        self._m[name].set(value)

    def observe(self, name: str, value: float) -> None:
        self._m[name].observe(value)

    def value(self, name: str, **labels) -> float:
        """A counter's or gauge's current value (a histogram's count), 0 when never set."""
        sample = PREFIX + (name.removesuffix("_total") + "_total" if name in COUNTERS or name in LABELLED else name)
        if name in HISTOGRAMS:
            sample = PREFIX + name + "_count"
        v = self.registry.get_sample_value(sample, labels or None)
        return 0.0 if v is None else v

    def render(self) -> bytes:
        return generate_latest(self.registry)


def quantile(sorted_vals, q: float) -> float | None:
    """Nearest-rank quantile of an ascending list (None when empty)."""
    if not sorted_vals:
        return None
    i = min(len(sorted_vals) - 1, max(0, int(round(q * len(sorted_vals) + 0.5)) - 1))
    return float(sorted_vals[i])
