"""The OpenAI-compatible server, driven by the official `openai` client (and raw HTTP for malformed
requests) against a real server on 127.0.0.1 with a tiny in-process model."""

from __future__ import annotations

import http.client
import json
import queue
import socket
import threading
import time

import openai
import torch
import pytest

from ifprune.selection.selectors import make_selector
from ifprune.serve import IfpruneServer, ServeConfig
from ifprune.serve.engine import Engine, GenRequest
from ifprune.core.tiny import tiny_lm

USER = [{"role": "user", "content": "write a function that adds two numbers"}]


def _server(**kw) -> IfpruneServer:
    lm = tiny_lm("llama", d_ffn=48)
    return IfpruneServer(lm, make_selector("griffin"), ServeConfig(port=0, **kw)).start()


def _client(srv) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def srv():
    s = _server()
    yield s
    s.close()


def _raw(srv, method, path, body: bytes | None = None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def _wait_metric(srv, name: str, at_least: float, timeout: float = 10.0) -> float:
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = srv.metrics.value(name)
        if v >= at_least:
            return v
        time.sleep(0.05)
    return srv.metrics.value(name)


def test_models_health_metrics(srv):
    c = _client(srv)
    ids = [m.id for m in c.models.list()]
    assert ids[:2] == ["ifprune", "ifprune-dense"] and "ifprune-code" in ids
    cards = {m.id: m.model_dump() for m in c.models.list()}  # which weights, width and compensation each runs
    assert cards["ifprune-dense"]["ffn_width"] == cards["ifprune-dense"]["d_ffn"]
    assert cards["ifprune"]["ffn_width"] < cards["ifprune"]["d_ffn"]
    assert cards["ifprune-dense"]["weights"]["tuned_by"] is None and cards["ifprune-dense"]["compensation"]["mode"] == "none"
    assert cards["ifprune-dense"]["reselection"] == {"mode": "off", "tokens": None, "prefill": "pruned"}
    assert set(cards["ifprune"]["reselection"]) == {"mode", "tokens", "prefill"}  # the one shape generate --json has
    status, body = _raw(srv, "GET", "/health")
    assert status == 200 and json.loads(body)["ffn_width"] == 24
    c.completions.create(model="ifprune", prompt="hello", max_tokens=2)
    status, body = _raw(srv, "GET", "/metrics")
    assert status == 200 and b"ifprune_requests_total" in body and b"ifprune_batch_size_count" in body


def test_chat_and_completion_with_plans(srv):
    c = _client(srv)
    a = c.chat.completions.create(model="ifprune-code", messages=USER, max_tokens=5)
    b = c.chat.completions.create(model="ifprune-code", messages=[{"role": "user", "content": "other"}], max_tokens=5)
    assert a.object == "chat.completion" and a.choices[0].message.role == "assistant"
    assert a.usage.completion_tokens <= 5 and a.choices[0].finish_reason in ("length", "stop")
    # a per-task plan depends on the task only, and is cached
    assert a.model_extra["ifprune"]["plan_hash"] == b.model_extra["ifprune"]["plan_hash"]
    assert a.model_extra["ifprune"]["ffn_width"] == 24
    # the same task given as a `task` field (registered name) gives the same plan; free text another
    t = c.chat.completions.create(model="ifprune", messages=USER, max_tokens=2, extra_body={"task": "code"})
    f = c.chat.completions.create(model="ifprune", messages=USER, max_tokens=2, extra_body={"task": "haiku poems"})
    assert t.model_extra["ifprune"]["plan_hash"] == a.model_extra["ifprune"]["plan_hash"]
    assert f.model_extra["ifprune"]["plan_hash"] != a.model_extra["ifprune"]["plan_hash"]
    # per-input plans follow the prompt
    p1 = c.completions.create(model="ifprune", prompt="def add(a, b):", max_tokens=3)
    p2 = c.completions.create(model="ifprune", prompt="The cat sat on the mat.", max_tokens=3)
    assert p1.object == "text_completion" and p1.usage.prompt_tokens == len("def add(a, b):")
    assert p1.model_extra["ifprune"]["plan_hash"] != p2.model_extra["ifprune"]["plan_hash"]
    d = c.completions.create(model="ifprune-dense", prompt="hello", max_tokens=3)
    assert d.model_extra["ifprune"] == {"plan_hash": None, "ffn_width": 48,
                                        "reselection": {"mode": "off", "tokens": None, "prefill": "pruned", "count": 0}}


def test_greedy_is_deterministic_and_streaming_matches(srv):
    c = _client(srv)
    full = c.chat.completions.create(model="ifprune-math", messages=USER, max_tokens=12)
    again = c.chat.completions.create(model="ifprune-math", messages=USER, max_tokens=12)
    chunks = list(c.chat.completions.create(model="ifprune-math", messages=USER, max_tokens=12, stream=True))
    assert full.choices[0].message.content == again.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == full.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == full.choices[0].finish_reason
    text = "".join(ch.choices[0].text for ch in c.completions.create(model="ifprune", prompt="abc", max_tokens=6,
                                                                      stream=True))
    assert text == c.completions.create(model="ifprune", prompt="abc", max_tokens=6).choices[0].text


def test_bad_requests_get_clear_4xx_and_server_keeps_serving(srv):
    c = _client(srv)
    with pytest.raises(openai.NotFoundError, match="unknown model 'gpt-4'"):
        c.chat.completions.create(model="gpt-4", messages=USER)
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        c.chat.completions.create(model="ifprune", messages=USER, max_tokens=0)
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        c.completions.create(model="ifprune", prompt="x", max_tokens=10**6)
    with pytest.raises(openai.BadRequestError, match="exceeds the model's context"):
        c.completions.create(model="ifprune", prompt="x" * 250, max_tokens=50)
    with pytest.raises(openai.BadRequestError, match="messages"):
        c.chat.completions.create(model="ifprune", messages=[])
    with pytest.raises(openai.BadRequestError, match="n=1"):
        c.chat.completions.create(model="ifprune", messages=USER, n=2)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        c.chat.completions.create(model="ifprune", messages=USER, temperature=-1)
    with pytest.raises(openai.BadRequestError, match="already names a task"):
        c.chat.completions.create(model="ifprune-code", messages=USER, extra_body={"task": "math"})
    status, body = _raw(srv, "POST", "/v1/chat/completions", b"{not json", {"Content-Type": "application/json"})
    assert status == 400 and "not valid JSON" in json.loads(body)["error"]["message"]
    status, body = _raw(srv, "POST", "/v1/completions", b"[1, 2]")
    assert status == 400 and "JSON object" in json.loads(body)["error"]["message"]
    big = json.dumps({"model": "ifprune", "prompt": "x" * (2 << 20)}).encode()
    status, body = _raw(srv, "POST", "/v1/completions", big)
    assert status == 413 and "exceeds the limit" in json.loads(body)["error"]["message"]
    status, _ = _raw(srv, "GET", "/v2/nothing")
    assert status == 404
    ok = c.chat.completions.create(model="ifprune", messages=USER, max_tokens=2)
    assert ok.usage.completion_tokens >= 1 or ok.choices[0].finish_reason == "stop"


def test_client_disconnect_mid_stream_cancels_and_server_keeps_serving(srv):
    c = _client(srv)
    before = srv.metrics.value("client_disconnects_total")
    stream = c.completions.create(model="ifprune-dense", prompt="abc", max_tokens=200, stream=True,
                                  temperature=1.0, seed=1)
    next(iter(stream))
    stream.response.close()
    assert _wait_metric(srv, "client_disconnects_total", before + 1) >= before + 1
    out = c.completions.create(model="ifprune", prompt="still there?", max_tokens=3)
    assert out.choices[0].finish_reason in ("length", "stop")


def test_full_queue_answers_429_then_recovers():
    s = _server(max_queue=1, max_batch=1, batch_window_s=0.0)
    try:
        c = _client(s)
        results: queue.Queue = queue.Queue()

        def call():
            try:
                c.completions.create(model="ifprune-dense", prompt="abc", max_tokens=200, temperature=1.0, seed=3)
                results.put("ok")
            except openai.RateLimitError as e:
                results.put("429" if "queue is full" in e.message else e.message)
            except Exception as e:  # pragma: no cover - reported below
                results.put(repr(e))

        threads = [threading.Thread(target=call) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        got = [results.get() for _ in threads]
        assert set(got) <= {"ok", "429"} and got.count("429") >= 1 and got.count("ok") >= 1, got
        assert c.completions.create(model="ifprune", prompt="hi", max_tokens=2).choices
        assert s.metrics.value("rejected_queue_full_total") == got.count("429")
    finally:
        s.close()


def test_concurrent_requests_are_batched_by_plan():
    # a wide collection window: on a loaded 2-core machine 8 client threads can take >0.3 s to send
    s = _server(max_batch=16, batch_window_s=2.0, policy="group")
    try:
        c = _client(s)
        models = ["ifprune-code", "ifprune-math"] * 4
        out = {}

        def call(i, m):
            out[i] = c.chat.completions.create(model=m, messages=USER, max_tokens=4).model_extra["ifprune"]

        threads = [threading.Thread(target=call, args=(i, m)) for i, m in enumerate(models)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(out) == 8 and len({out[i]["plan_hash"] for i in out}) == 2
        # the scheduler counts a batch after its last response went out: give it a moment
        deadline = time.monotonic() + 10
        while s.metrics.value("batches_total") < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert s.metrics.value("batches_total") == 2  # one batch per plan, not per request
    finally:
        s.close()


def test_batched_rows_match_unbatched_generation():
    lm = tiny_lm("qwen2", d_ffn=48)
    eng = Engine(lm, make_selector("griffin"), 24)
    prompts = ["a", "hello there, general", "def f(x): return x"]

    def run(batch_prompts):
        reqs = [GenRequest(ids=lm.tokenizer(p)["input_ids"], max_tokens=8, mode="task", task="code",
                           events=queue.Queue()) for p in batch_prompts]
        for r in reqs:
            r.plan = eng.plan_for(r)
        eng.run_batch(reqs, reqs[0].plan)
        texts = []
        for r in reqs:
            evs = []
            while not r.events.empty():
                evs.append(r.events.get())
            texts.append("".join(e[1] for e in evs if e[0] == "delta"))
        return texts

    assert run(prompts) == [run([p])[0] for p in prompts]


@pytest.mark.parametrize("every,prefill", [(False, "pruned"), (True, "dense"), (True, "pruned"), (False, "dense"),
                                           (True, "dense-answer")])
def test_refresh_in_the_engine_matches_generate_with_refresh(every, prefill):
    """With refresh R each request decodes R tokens under the batch's plan, then goes on under its own
    re-selected plan (re-selected again after every R with `every`; the full model's prompt cache with a dense
    prefill): the same answer as `generate(..., refresh=R, refresh_every=..., prefill=...)`, batched or alone."""
    from ifprune.core.prompting import encode_prompt
    from ifprune.runtime.generation import SamplingConfig, generate

    lm = tiny_lm("llama", d_ffn=48)
    sel = make_selector("griffin")
    eng = Engine(lm, sel, 24, refresh=3, every=every, prefill=prefill)
    prompts = ["count to ten", "hello there, general", "def f(x): return x"]

    def run(batch_prompts):
        reqs = [GenRequest(ids=encode_prompt(lm.tokenizer, p, chat=True)[0].tolist(), max_tokens=9,
                           select_text=p, events=queue.Queue()) for p in batch_prompts]
        for r in reqs:
            r.plan = eng.plan_for(r)
        for r in reqs[1:]:
            r.plan = reqs[0].plan  # one batch needs one plan: every row starts under the first's
        stats = eng.run_batch(reqs, reqs[0].plan)
        texts = []
        for r in reqs:
            evs = []
            while not r.events.empty():
                evs.append(r.events.get())
            texts.append(("".join(e[1] for e in evs if e[0] == "delta"), r.refreshed, r.refreshes))
        return [t[:2] for t in texts], stats, [t[2] for t in texts]

    alone, counts = [], []
    for p in prompts:
        texts, _, n = run([p])
        alone.append(texts[0])
        counts.append(n[0])
    for p, (text, refreshed), n in zip(prompts, alone, counts):
        res = generate(lm, p, selector=sel, width=24, sampling=SamplingConfig(max_new_tokens=9), refresh=3,
                       refresh_every=every, prefill=prefill)
        assert text == res.text
        assert (refreshed.hash if refreshed else None) == (res.refresh or {}).get("plan_hash")
        assert n == (res.refresh or {}).get("count", 0)
    assert any(r is not None for _, r in alone)  # the tiny model answers past 3 tokens at least once
    if every:
        assert max(counts) == 2  # 9 tokens: re-selected after 3 and after 6
    batched, stats, _ = run(prompts)
    assert [t for t, _ in batched][:1] == [alone[0][0]] and stats["refresh_s"] > 0
    assert all((r is None) == (a is None) for (_, r), (_, a) in zip(batched, alone))


def test_served_refresh_is_reported_and_0_turns_it_off():
    s = _server(refresh=3)
    try:
        c = _client(s)
        card = {m.id: m.model_dump() for m in c.models.list()}
        assert card["ifprune"]["reselection"]["tokens"] == 3 and card["ifprune-dense"]["reselection"]["mode"] == "off"
        assert "refresh" not in card["ifprune"]  # (one JSON shape of re-selection)
        out = c.chat.completions.create(model="ifprune", messages=USER, max_tokens=8).model_extra["ifprune"]
        rs = out["reselection"]
        if rs["count"]:  # (unless the tiny model's answer ended within 3 tokens)
            assert rs["tokens"] == 3 and len(rs["plan_hash"]) == len(out["plan_hash"])
        dense = c.chat.completions.create(model="ifprune-dense", messages=USER, max_tokens=8).model_extra["ifprune"]
        assert dense["reselection"]["mode"] == "off" and "refresh" not in dense
    finally:
        s.close()
    s = _server(refresh=0)
    try:
        assert s.engine.refresh is None
    finally:
        s.close()
    with pytest.raises(Exception, match="refresh must be a whole number"):
        ServeConfig(refresh=-2).validate()
    with pytest.raises(Exception, match="prefill must be one of"):
        ServeConfig(prefill="half").validate()


def test_served_refresh_every_runs_dense_prefill_and_reports_it():
    s = _server(refresh=3, refresh_every=True)
    try:
        card = {m.id: m.model_dump() for m in _client(s).models.list()}
        rs, dense = card["ifprune"]["reselection"], card["ifprune-dense"]["reselection"]
        assert (rs["mode"], rs["prefill"]) == ("every", "dense-answer")
        assert (dense["mode"], dense["prefill"]) == ("off", "pruned")
        out = _client(s).chat.completions.create(model="ifprune", messages=USER, max_tokens=10)
        got = out.model_extra["ifprune"]["reselection"]
        assert got["mode"] == "every" and 0 <= got["count"] <= 3
    finally:
        s.close()
    with pytest.raises(Exception, match="turn re-selection on"):
        _server(refresh_every=True)  # griffin has no re-selection of its own


def test_graceful_shutdown_finishes_running_request_and_leaks_nothing():
    baseline = {t.ident for t in threading.enumerate()}
    s = _server()
    c = _client(s)
    port = s.port
    got = {}

    def call():
        got["r"] = c.completions.create(model="ifprune-dense", prompt="abc", max_tokens=100, temperature=1.0, seed=5)

    t = threading.Thread(target=call)
    t.start()
    time.sleep(0.2)
    s.close(drain_s=60)
    t.join(30)
    assert got["r"].choices[0].finish_reason in ("length", "stop")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    c.close()
    time.sleep(0.2)
    left = [th.name for th in threading.enumerate() if th.ident not in baseline and th is not t]
    assert left == []


@pytest.mark.integration
def test_real_model_chat():
    from ifprune.core.loading import load_model

    lm = load_model()
    with IfpruneServer(lm, make_selector("griffin"), ServeConfig(port=0)) as s:
        c = _client(s)
        r = c.chat.completions.create(model="ifprune-math", messages=[{"role": "user", "content": "What is 2+3?"}],
                                      max_tokens=16)
        assert r.choices[0].message.content.strip() and r.model_extra["ifprune"]["ffn_width"] == 768
        chunks = list(c.chat.completions.create(model="ifprune-math", stream=True, max_tokens=16,
                                                messages=[{"role": "user", "content": "What is 2+3?"}]))
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == r.choices[0].message.content


@pytest.mark.parametrize("signame,ignored", [("SIGINT", False), ("SIGTERM", False), ("SIGINT", True)])
def test_cli_serve_ctrl_c_during_a_request_drains_and_exits(tmp_path, signame, ignored):
    """`ifprune serve` on an exported tiny model; SIGINT or SIGTERM while a request runs: it finishes,
    then exit 0, also when the server was started with SIGINT ignored (as `&` in a script does)."""
    import os
    import re
    import signal
    import subprocess
    import sys

    from ifprune.export.checkpoint import export_plan
    from ifprune.core.plan import Plan

    lm = tiny_lm("llama", d_ffn=48)
    export_plan(lm, Plan.dense(lm.num_layers, lm.d_ffn), tmp_path / "m")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-m", "ifprune.cli", "serve", "--model", str(tmp_path / "m"),
                             "--port", "0", "--keep", "0.5"], stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignored else None)
    err: list[str] = []
    try:
        found = None
        for _ in range(50):  # a first run may log other lines (cache builds, warnings) before the URL
            line = proc.stderr.readline()
            err.append(line)
            if not line or (found := re.search(r"(http://\S+)/v1", line)):
                break
        assert found, "".join(err)
        url = found.group(1)
        import threading

        # keep reading stderr: a full pipe would block the server's writes (and its exit) forever
        reader = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)
        reader.start()
        c = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
        stream = c.completions.create(model="ifprune-dense", prompt="abc", max_tokens=150, stream=True,
                                      temperature=1.0, seed=2)
        it = iter(stream)
        first = next(it)
        proc.send_signal(getattr(signal, signame))
        rest = list(it)
        assert (rest or [first])[-1].choices[0].finish_reason in ("length", "stop")
        assert proc.wait(60) == 0, "".join(err)[-2000:]
        reader.join(10)
        assert "shutting down" in "".join(err)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_stream_reports_usage_once_and_only_when_asked(srv):
    """As OpenAI streams: without stream_options.include_usage no chunk carries usage; with it, exactly one, the
    last, with no choices (a client summing usage per chunk counts it once)."""
    c = _client(srv)
    plain = list(c.chat.completions.create(model="ifprune-math", messages=USER, max_tokens=6, stream=True))
    assert all(ch.usage is None for ch in plain)
    asked = list(c.chat.completions.create(model="ifprune-math", messages=USER, max_tokens=6, stream=True,
                                           stream_options={"include_usage": True}))
    with_usage = [ch for ch in asked if ch.usage is not None]
    assert len(with_usage) == 1 and with_usage[0] is asked[-1] and asked[-1].choices == []
    assert with_usage[0].usage.completion_tokens >= 1
    done = list(c.completions.create(model="ifprune", prompt="abc", max_tokens=4, stream=True,
                                     stream_options={"include_usage": True}))
    assert [ch.usage is not None for ch in done].count(True) == 1 and done[-1].usage is not None


def test_a_message_name_the_template_does_not_use_is_refused(srv):
    """messages[].name was accepted and dropped: a template without names now refuses it, naming the field."""
    c = _client(srv)
    with pytest.raises(openai.BadRequestError, match=r"messages\[1\]\.name' is not used by this model's chat template"):
        c.chat.completions.create(model="ifprune", max_tokens=2, messages=[
            {"role": "system", "content": "be brief"}, {"role": "user", "content": "hi", "name": "alice"}])
    assert c.chat.completions.create(model="ifprune", messages=USER, max_tokens=2).choices  # still serving


def test_prompt_length_is_bounded_by_a_flag():
    """--max-prompt-tokens (default 2048): a longer prompt is a 400 naming the bound, before it reaches the model;
    0 leaves only the model's context; a bad bound is refused at start."""
    s = _server(max_prompt_tokens=8)
    try:
        c = _client(s)
        with pytest.raises(openai.BadRequestError, match="this server accepts at most 8"):
            c.completions.create(model="ifprune", prompt="a long prompt of many many tokens " * 4, max_tokens=2)
        assert c.completions.create(model="ifprune", prompt="ab", max_tokens=2).choices  # short ones still run
    finally:
        s.close()
    assert ServeConfig().max_prompt_tokens == 2048
    with pytest.raises(Exception, match="max_prompt_tokens must be a whole number >= 1"):
        ServeConfig(max_prompt_tokens=-3).validate()
    from ifprune.cli import build_parser

    args = build_parser().parse_args(["serve", "--max-prompt-tokens", "0"])
    assert args.max_prompt_tokens == 0  # run() passes None: the model's context only


def test_tuned_weights_at_full_width_are_ifprune_full_not_dense(tmp_path):
    """"dense" is the base model's own weights everywhere: a server whose weights a trained artifact tuned serves
    their full width as ifprune-full and answers ifprune-dense with a 404 that says why."""
    from ifprune.selection.artifact import load_artifact, save_artifact
    from ifprune.selection.heads import PredictorHead

    lm = tiny_lm("llama", d_ffn=48)
    torch.manual_seed(0)
    head = PredictorHead(lm.model.config.hidden_size, lm.num_layers, lm.d_ffn, 8)
    path = save_artifact(tmp_path / "art", lm=lm, kind="predictor", width=24, module=head, llm="none", recipe={},
                         base_fingerprint=lm.fingerprint())
    load_artifact(path).attach(lm)
    s = IfpruneServer(lm, make_selector("predictor", checkpoint=str(path)), ServeConfig(port=0)).start()
    try:
        c = _client(s)
        cards = {m.id: m.model_dump() for m in c.models.list()}
        assert "ifprune-full" in cards and "ifprune-dense" not in cards
        assert cards["ifprune-full"]["selector"] == "full" and cards["ifprune-full"]["weights"]["tuned_by"]
        out = c.completions.create(model="ifprune-full", prompt="hello", max_tokens=3)
        assert out.model_extra["ifprune"]["ffn_width"] == lm.d_ffn
        with pytest.raises(openai.NotFoundError, match="their full width is ifprune-full"):
            c.completions.create(model="ifprune-dense", prompt="hello", max_tokens=3)
    finally:
        s.close()
