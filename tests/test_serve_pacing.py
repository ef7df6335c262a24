"""Chunked passes and interleaved batches: a long prompt never holds the server's worker for longer than one
chunk, and reading it a chunk at a time computes what one pass computes."""

from __future__ import annotations

import queue

import pytest
import torch

from ifprune.core.errors import IfpruneError
from ifprune.core.prompt_pass import paced
from ifprune.core.prompting import encode_prompt
from ifprune.core.tiny import tiny_lm
from ifprune.selection.prefill import dense_prefix_cache
from ifprune.selection.refresh import prompt_pass
from ifprune.selection.selectors import GriffinSelector, make_selector
from ifprune.serve.engine import Engine, GenRequest
from ifprune.serve.metrics import Metrics
from ifprune.serve.scheduler import Scheduler


def _ids(lm, n: int) -> torch.Tensor:
    return torch.randint(5, lm.tokenizer.vocab_size - 1, (1, n), generator=torch.Generator().manual_seed(n))


@pytest.mark.parametrize("family", ["llama", "gpt2", "phi3"])
def test_paced_passes_compute_what_one_pass_computes(family):
    lm = tiny_lm(family, d_ffn=48)
    ids = _ids(lm, 50)
    calls = []
    whole_scores = GriffinSelector.scores_from_ids(lm, ids)
    whole_hidden, whole_state = prompt_pass(lm, ids)
    whole_cache = dense_prefix_cache(lm, ids)
    with paced(16, lambda: calls.append(1)):
        scores = GriffinSelector.scores_from_ids(lm, ids)
        hidden, state = prompt_pass(lm, ids)
        cache = dense_prefix_cache(lm, ids)
    assert len(calls) == 3 * 3  # 50 tokens in chunks of 16: three pauses per pass
    torch.testing.assert_close(scores, whole_scores, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(hidden, whole_hidden, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(state.squares, whole_state.squares, rtol=1e-4, atol=1e-5)
    for a, b in ((state.cache, whole_state.cache), (cache, whole_cache)):
        assert a.get_seq_length() == b.get_seq_length() == 50
        for la, lb in zip(a.layers, b.layers):
            torch.testing.assert_close(la.keys, lb.keys, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(la.values, lb.values, rtol=1e-4, atol=1e-5)


def test_pauses_run_outside_the_recording_hooks_and_are_not_paced_themselves():
    """What runs between two chunks (another request's pass) is neither recorded by the paused pass nor paced."""
    lm = tiny_lm("llama", d_ffn=48)
    ids, other = _ids(lm, 40), _ids(lm, 30)
    alone = GriffinSelector.scores_from_ids(lm, ids)
    other_alone = GriffinSelector.scores_from_ids(lm, other)
    seen = []

    def between():
        seen.append(GriffinSelector.scores_from_ids(lm, other))

    with paced(8, between):
        scores = GriffinSelector.scores_from_ids(lm, ids)
    torch.testing.assert_close(scores, alone, rtol=1e-4, atol=1e-5)
    assert len(seen) == 4
    for s in seen:
        torch.testing.assert_close(s, other_alone, rtol=0, atol=0)  # one pass: not paced inside a pause


def test_paced_refuses_a_chunk_below_one_token():
    with pytest.raises(IfpruneError, match="at least 1 token"):
        with paced(0, lambda: None):
            pass


@pytest.mark.parametrize("prefill", ["pruned", "dense"])
def test_chunked_prefill_gives_the_same_answers(prefill):
    lm = tiny_lm("llama", d_ffn=48)
    eng = Engine(lm, make_selector("griffin"), 24, prefill=prefill)
    prompts = ["a", "hello there, general kenobi, you are a bold one", "def f(x): return x"]

    def run(chunk):
        eng.chunk = chunk
        reqs = [GenRequest(ids=encode_prompt(lm.tokenizer, p, chat=True)[0].tolist(), max_tokens=6, mode="task",
                           task="code", events=queue.Queue()) for p in prompts]
        for r in reqs:
            r.plan = eng.plan_for(r)
        eng.run_batch(reqs, reqs[0].plan)
        return ["".join(e[1] for e in list(r.events.queue) if e[0] == "delta") for r in reqs]

    assert run(5) == run(None)


def _events(r: GenRequest, timeout: float = 120.0) -> list:
    out = []
    while not out or out[-1][0] not in ("done", "error"):
        out.append(r.events.get(timeout=timeout))
    return out


@pytest.mark.parametrize("prefill", ["pruned", "dense-answer"])
def test_a_short_request_is_answered_while_a_long_prompt_is_read(prefill):
    """The long request's selection and prefill run a chunk at a time; a short one that arrives behind it gets
    its plan, its prefill and its whole answer in between, before the long one's first token."""
    lm = tiny_lm("llama", d_ffn=48)
    eng = Engine(lm, make_selector("griffin"), 24, refresh=4 if prefill == "dense-answer" else None,
                 every=prefill == "dense-answer", prefill=prefill)
    order = []

    class Watched(queue.Queue):
        def __init__(self, name):
            super().__init__()
            self.name = name

        def put(self, item, *a, **k):
            order.append((self.name, item[0]))
            super().put(item, *a, **k)

    long_ids = _ids(lm, 200)[0].tolist()
    long_req = GenRequest(ids=long_ids, max_tokens=4, select_text=lm.tokenizer.decode(long_ids),
                          events=Watched("long"))
    short_req = GenRequest(ids=encode_prompt(lm.tokenizer, "hi", chat=True)[0].tolist(), max_tokens=3,
                           mode="task", task="qa", events=Watched("short"))
    sched = Scheduler(eng, Metrics(), batch_window_s=0.2, prefill_chunk=8)
    try:
        sched.submit(long_req)
        sched.submit(short_req)
        assert _events(short_req)[-1][0] == "done"
        assert _events(long_req)[-1][0] == "done"
    finally:
        sched.stop(5)
    first_long = next(i for i, (n, k) in enumerate(order) if n == "long" and k in ("delta", "done"))
    short_done = next(i for i, (n, k) in enumerate(order) if n == "short" and k == "done")
    assert short_done < first_long


def test_a_batch_that_fails_as_a_whole_reruns_its_requests_alone():
    """Only the request that breaks the batch gets the error; the others are answered from batches of their own."""
    lm = tiny_lm("llama", d_ffn=48)

    class Breaks(Engine):
        def batch_job(self, reqs, plan, abort=lambda: False):
            if any(r.task == "poison" for r in reqs):
                raise RuntimeError("this input breaks the forward")
                yield  # (a generator, as the real one)
            return (yield from super().batch_job(reqs, plan, abort))

    eng = Breaks(lm, make_selector("griffin"), 24)
    metrics = Metrics()
    reqs = [GenRequest(ids=encode_prompt(lm.tokenizer, "hi", chat=True)[0].tolist(), max_tokens=3, mode="dense",
                       task="poison" if i == 1 else None, events=queue.Queue()) for i in range(3)]
    sched = Scheduler(eng, metrics, batch_window_s=0.3)
    try:
        for r in reqs:
            sched.submit(r)
        ends = [_events(r)[-1] for r in reqs]
    finally:
        sched.stop(5)
    assert [e[0] for e in ends] == ["done", "error", "done"]
    assert ends[1][1] == 500 and "generation failed for this request" in ends[1][2]
    assert metrics.value("batches_total") == 2  # the two good requests, each alone after the failed batch of three


@pytest.mark.parametrize("field", ["max_running", "prefill_chunk"])
def test_interleaving_limits_below_one_are_refused(field):
    from ifprune.serve import ServeConfig

    with pytest.raises(IfpruneError, match=f"{field} must be >= 1, got 0"):
        ServeConfig(**{field: 0}).validate()
