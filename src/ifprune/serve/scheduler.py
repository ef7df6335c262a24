"""A bounded request queue and the one worker thread that does all model work.

Batching policy for mixed tasks (a batch can run only one plan, since the compact model holds one
plan's weights):
- "group" (default): group-by-plan. The worker takes the plan of the oldest waiting request and
  batches *every* waiting request with that plan (up to `max_batch`), wherever it sits in the queue.
- "fifo": one plan per batch in arrival order: the head request plus the requests right behind it
  that share its plan. This is the baseline a plain per-plan server gets with mixed traffic.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from .engine import Engine, GenRequest
from .metrics import Metrics

log = logging.getLogger(__name__)
POLICIES = ("group", "fifo")


class QueueFull(Exception):
    pass


class ShuttingDown(Exception):
    pass


class Scheduler:
    def __init__(self, engine: Engine, metrics: Metrics, *, max_batch: int = 8, max_queue: int = 64,
                 batch_window_s: float = 0.01, policy: str = "group"):
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}")
        self.engine, self.metrics = engine, metrics
        self.max_batch, self.max_queue, self.window, self.policy = max_batch, max_queue, batch_window_s, policy
        self._new: deque[GenRequest] = deque()  # arrived, plan not resolved yet
        self._ready: list[GenRequest] = []  # plan resolved, waiting for a batch
        self._cv = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="ifprune-worker", daemon=True)
        self._thread.start()

    def waiting(self) -> int:
        return len(self._new) + len(self._ready)

    def submit(self, req: GenRequest) -> None:
        with self._cv:
            if self._stopping:
                raise ShuttingDown()
            if self.waiting() >= self.max_queue:
                raise QueueFull()
            req.arrived = time.perf_counter()
            self._new.append(req)
            self.metrics.set_gauge("queue_depth", self.waiting())
            self._cv.notify()

    def stop(self, drain_s: float = 30.0) -> None:
        """Refuse new work, let waiting and running requests finish for up to `drain_s`, end the rest."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        self._thread.join(drain_s)
        with self._cv:
            left = list(self._new) + self._ready
            self._new.clear()
            self._ready.clear()
        for r in left:
            r.cancelled.set()
            r.emit("error", 503, "the server is shutting down; retry on another instance")
        if self._thread.is_alive():  # a long batch: ask it to end and wait for it
            self._abort = True
            self._thread.join(10)

    _abort = False

    # worker ------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._new and not self._ready and not self._stopping:
                    self._cv.wait()
                if self._stopping and not self._new and not self._ready:
                    return
                first_wait = not self._ready
            if first_wait and self.window > 0:
                time.sleep(self.window)  # let concurrent arrivals join this batch
            self._resolve_new()
            batch = self._take_batch()
            if batch:
                self._run(batch)

    def _resolve_new(self) -> None:
        while True:
            with self._cv:
                if not self._new:
                    return
                req = self._new.popleft()
            if req.cancelled.is_set():
                req.emit("done", "cancelled", None)
                continue
            try:
                t0 = time.perf_counter()
                req.plan = self.engine.plan_for(req)
                self.metrics.observe("selection_seconds", time.perf_counter() - t0)
            except Exception as e:  # a selector failing on one prompt must not stop the server
                log.exception("plan selection failed")
                if type(e).__name__ == "IfpruneError":
                    req.emit("error", 400, f"plan selection failed: {e}")
                else:
                    req.emit("error", 500, f"plan selection failed ({type(e).__name__}); see the server log")
                continue
            with self._cv:
                self._ready.append(req)

    def _take_batch(self) -> list[GenRequest]:
        with self._cv:
            live = [r for r in self._ready if not r.cancelled.is_set()]
            for r in self._ready:
                if r.cancelled.is_set():
                    r.emit("done", "cancelled", None)
            if not live:
                self._ready = []
                return []
            key = _plan_key(live[0])
            if self.policy == "group":
                batch = [r for r in live if _plan_key(r) == key][: self.max_batch]
            else:
                batch = []
                for r in live:
                    if _plan_key(r) != key or len(batch) == self.max_batch:
                        break
                    batch.append(r)
            taken = set(map(id, batch))
            self._ready = [r for r in live if id(r) not in taken]
            self.metrics.set_gauge("queue_depth", self.waiting())
            return batch

    def _run(self, batch: list[GenRequest]) -> None:
        now = time.perf_counter()
        for r in batch:
            self.metrics.observe("queue_seconds", now - r.arrived)
        self.metrics.set_gauge("running", len(batch))
        t0 = time.perf_counter()
        stats = self._generate(batch)
        self.metrics.set_gauge("running", 0)
        self.metrics.inc("batches_total")
        self.metrics.inc("generated_tokens_total", stats["tokens"])
        self.metrics.observe("batch_size", len(batch))
        self.metrics.observe("batch_seconds", time.perf_counter() - t0)
        self.metrics.observe("loading_seconds", stats["load_s"])
        if stats.get("refresh_s"):
            self.metrics.observe("refresh_seconds", stats["refresh_s"])


    def _generate(self, batch: list[GenRequest]) -> dict:
        """Run a batch; if the batch as a whole fails (e.g. one request's input breaks the forward), rerun
        its requests one by one so only the failing one gets the error. A request that already streamed
        text cannot be rerun and gets the error. The client sees a generic message; the log has the cause."""
        try:
            return self.engine.run_batch(batch, batch[0].plan, abort=lambda: self._abort)
        except Exception as e:
            log.exception("batch of %d failed", len(batch))
            if len(batch) == 1:
                batch[0].emit("error", 500, f"generation failed for this request ({type(e).__name__}); see the server log")
                return {"tokens": 0, "load_s": 0.0}
        stats = {"tokens": 0, "load_s": 0.0}
        for r in batch:
            if r.emitted:
                r.emit("error", 500, "generation failed mid-stream; see the server log")
                continue
            one = self._generate([r])
            stats = {k: stats[k] + one[k] for k in stats}
        return stats


def _plan_key(r: GenRequest):
    return r.plan.hash if r.plan is not None else "dense"
