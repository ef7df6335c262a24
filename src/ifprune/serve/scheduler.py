"""A bounded request queue and the one worker thread that does all model work.

Batching policy for mixed tasks (a batch can run only one plan, since a compact model holds one
plan's weights):
- "group" (default): group-by-plan. The worker takes the plan of the oldest waiting request and
  batches *every* waiting request with that plan (up to `max_batch`), wherever it sits in the queue.
- "fifo": one plan per batch in arrival order: the head request plus the requests right behind it
  that share its plan. This is the baseline a plain per-plan server gets with mixed traffic.

Up to `max_running` batches run at once, interleaved a unit at a time (a prefill chunk of at most
`prefill_chunk` tokens, a decoding step, a re-selection: Engine.batch_job), each on a compact model of its
own. A long prompt therefore never holds the worker for longer than one chunk: the selection pass over it
and its prefill run chunk by chunk, and between two chunks the other batches take a step and requests that
arrived meanwhile get their plans and start (core.prompt_pass.paced). A short request behind a long one
waits for about one chunk per unit instead of the whole prompt (vLLM's chunked prefill, without mixing
plans in one matmul).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

from ..core.prompt_pass import paced
from .engine import Engine, GenRequest
from .metrics import Metrics

log = logging.getLogger(__name__)
POLICIES = ("group", "fifo")


class QueueFull(Exception):
    pass


class ShuttingDown(Exception):
    pass


@dataclass(eq=False)
class _Job:
    """One running batch: its requests and the generator that advances it a unit at a time."""

    reqs: list
    gen: object
    started: float
    units: int = 0  # units run so far


class Scheduler:
    def __init__(self, engine: Engine, metrics: Metrics, *, max_batch: int = 8, max_queue: int = 64,
                 batch_window_s: float = 0.01, policy: str = "group", max_running: int = 2,
                 prefill_chunk: int = 64):
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}")
        self.engine, self.metrics = engine, metrics
        self.max_batch, self.max_queue, self.window, self.policy = max_batch, max_queue, batch_window_s, policy
        self.max_running, self.chunk = max_running, prefill_chunk
        engine.chunk = prefill_chunk
        self._new: deque[GenRequest] = deque()  # arrived, plan not resolved yet
        self._ready: list[GenRequest] = []  # plan resolved, waiting for a batch
        self._jobs: list[_Job] = []  # running batches
        self._current: _Job | None = None  # the batch whose unit is running (never stepped from inside itself)
        self._between_depth = 0
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
        if self._thread.is_alive():  # long batches: ask them to end and wait for them
            self._abort = True
            self._thread.join(10)

    _abort = False

    # worker ------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._new and not self._ready and not self._jobs and not self._stopping:
                    self._cv.wait()
                if self._stopping and not self._new and not self._ready and not self._jobs:
                    return
                first_wait = not self._ready and not self._jobs
            if first_wait and self.window > 0:
                time.sleep(self.window)  # let concurrent arrivals join this batch
            with paced(self.chunk, self._between):
                self._round()

    def _round(self, inside: bool = False) -> None:
        """Plans for new requests, new batches while there is room, then one unit of every running batch.
        `inside`: run between two chunks of a long pass, which takes only requests whose selection is short."""
        self._resolve_new(short_only=inside)
        self._start_batches()
        for job in sorted(self._jobs, key=lambda j: j.units):  # a batch that just started first: its first token
            if job is not self._current and job in self._jobs:
                self._step(job)

    def _between(self) -> None:
        """Called between two chunks of a long pass (core.prompt_pass.paced): everyone else's turn."""
        if self._between_depth:
            return
        self._between_depth += 1
        try:
            self._round(inside=True)
        finally:
            self._between_depth -= 1

    def _short(self, req: GenRequest) -> bool:
        """Whether selecting this request's plan reads at most one chunk (none when its plan is cached)."""
        return self.engine.selection_tokens(req) <= self.chunk

    def _resolve_new(self, short_only: bool = False) -> None:
        while True:
            with self._cv:
                req = next((r for r in self._new if not short_only or self._short(r)), None)
                if req is None:
                    return
                self._new.remove(req)
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
            if live[0].solo:  # a request whose batch failed runs alone
                batch = live[:1]
            elif self.policy == "group":
                batch = [r for r in live if _plan_key(r) == key and not r.solo][: self.max_batch]
            else:
                batch = []
                for r in live:
                    if _plan_key(r) != key or r.solo or len(batch) == self.max_batch:
                        break
                    batch.append(r)
            taken = set(map(id, batch))
            self._ready = [r for r in live if id(r) not in taken]
            self.metrics.set_gauge("queue_depth", self.waiting())
            return batch

    def _start_batches(self) -> None:
        while len(self._jobs) < self.max_running:
            batch = self._take_batch()
            if not batch:
                return
            now = time.perf_counter()
            for r in batch:
                self.metrics.observe("queue_seconds", now - r.arrived)
            gen = self.engine.batch_job(batch, batch[0].plan, abort=lambda: self._abort)
            self._jobs.append(_Job(batch, gen, now))
            self._running_gauge()

    def _running_gauge(self) -> None:
        self.metrics.set_gauge("running", sum(len(j.reqs) for j in self._jobs))

    def _step(self, job: _Job) -> None:
        """One unit of `job`; at its end, its counters go to the metrics."""
        outer, self._current = self._current, job
        job.units += 1
        try:
            next(job.gen)
            return
        except StopIteration as done:
            self._end(job, done.value)
        except Exception as e:  # the batch as a whole failed (e.g. one request's input breaks the forward)
            log.exception("batch of %d failed", len(job.reqs))
            self._end(job, None)
            self._fail(job.reqs, e)
        finally:
            self._current = outer

    def _end(self, job: _Job, stats: dict | None) -> None:
        self._jobs.remove(job)
        self._running_gauge()
        if stats is None:
            return
        self.metrics.inc("batches_total")
        self.metrics.inc("generated_tokens_total", stats["tokens"])
        self.metrics.observe("batch_size", len(job.reqs))
        self.metrics.observe("batch_seconds", time.perf_counter() - job.started)
        self.metrics.observe("loading_seconds", stats["load_s"])
        if stats.get("refresh_s"):
            self.metrics.observe("refresh_seconds", stats["refresh_s"])

    def _fail(self, reqs: list[GenRequest], e: Exception) -> None:
        """A failed batch's requests run again one by one, so only the failing one gets the error. A request
        that already streamed text cannot be rerun and gets the error. The client sees a generic message; the
        log has the cause."""
        if len(reqs) == 1:
            reqs[0].emit("error", 500, f"generation failed for this request ({type(e).__name__}); see the server log")
            return
        again = []
        for r in reqs:
            if r.emitted:
                r.emit("error", 500, "generation failed mid-stream; see the server log")
            else:
                r.solo, r.refreshed, r.refreshes = True, None, 0
                again.append(r)
        with self._cv:
            self._ready[:0] = again


def _plan_key(r: GenRequest):
    return r.plan.hash if r.plan is not None else "dense"
