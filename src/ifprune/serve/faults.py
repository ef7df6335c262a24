"""Bounded load-and-fault run against a real server on 127.0.0.1: concurrent streams, clients that
disconnect, slow readers, a full queue, a poisoned request in a batch, and SIGTERM mid-stream (a
subprocess `ifprune serve`). Every response is checked: nothing lost (each request ends in a complete
response, a 429, or a stream ending with [DONE]) and nothing corrupted (every event parses, one finish
reason, greedy text equal to an unbatched reference of the same request).

    python -m ifprune.serve.faults --out results/serve            # tiny random model (seconds)
    python -m ifprune.serve.faults --model DIR --requests 16       # a real model directory
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from ..core.paths import write_json, write_text

PROMPTS = ["Write a Python function that reverses a string.", "What is 12 times 7?", "Describe a sunset.",
           "What is the capital of France?", "List three prime numbers.", "abc"]
MODELS = ["ifprune-code", "ifprune-math", "ifprune-dense", "ifprune"]


def request_stream(port: int, body: dict, *, read_delay_s: float = 0.0, drop_after: int | None = None,
                   timeout: float = 300.0) -> dict:
    """POST a streaming completion and read it event by event. Returns what arrived and whether it
    was intact: every `data:` line JSON (or [DONE]), at most one finish reason, [DONE] last."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("POST", "/v1/completions", body=json.dumps({**body, "stream": True}),
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    out = {"status": resp.status, "text": "", "finish": None, "done": False, "error": None, "intact": True, "events": 0}
    if resp.status != 200:
        out["error"] = json.loads(resp.read()).get("error", {}).get("message")
        conn.close()
        return out
    try:
        for raw in resp:
            line = raw.decode().strip()
            if not line:
                continue
            if not line.startswith("data: "):
                out["intact"] = False
                continue
            data = line[6:]
            if data == "[DONE]":
                out["done"] = True
                continue
            if out["done"]:
                out["intact"] = False  # anything after [DONE]
            ev = json.loads(data)
            out["events"] += 1
            if "error" in ev:
                out["error"] = ev["error"]["message"]
                continue
            ch = ev["choices"][0]
            out["text"] += ch["text"]
            if ch["finish_reason"] is not None:
                out["intact"] &= out["finish"] is None
                out["finish"] = ch["finish_reason"]
            if drop_after is not None and out["events"] >= drop_after:
                conn.sock.close()  # a client that goes away mid-stream
                out["dropped"] = True
                return out
            if read_delay_s:
                time.sleep(read_delay_s)
    except (json.JSONDecodeError, KeyError, IndexError):
        out["intact"] = False
    finally:
        conn.close()
    out["intact"] &= out["done"] and (out["finish"] is not None or out["error"] is not None)
    return out


def _check(results: list[dict], refs: dict | None) -> dict:
    ok = [r for r in results if r["status"] == 200 and r["done"] and r["intact"] and r["error"] is None]
    rejected = [r for r in results if r["status"] == 429]
    errored = [r for r in results if r["error"] is not None and r["status"] == 200]
    # anything else a client did not leave is lost, a refusal other than 429 (e.g. a 400) included
    lost = [r for r in results if r not in ok and r not in rejected and r not in errored and not r.get("dropped")]
    corrupt = [r for r in results if not r["intact"] and not r.get("dropped")]
    mismatch = [r for r in ok if refs is not None and r.get("key") in refs and refs[r["key"]] != r["text"]]
    return {"requests": len(results), "complete": len(ok), "rejected_429": len(rejected), "lost": len(lost),
            "ended_with_error_event": len(errored), "corrupted": len(corrupt), "differs_from_reference": len(mismatch),
            "dropped_by_client": sum(1 for r in results if r.get("dropped"))}


def settle(srv, disconnects: int = 0, timeout_s: float = 10.0) -> None:
    """Wait until the server is idle, has counted the `disconnects` the clients made, and its counters
    stop moving: it counts a disconnect when its stream for the gone client ends, and a batch after its
    requests have their answers, so both can trail the clients (seen on a loaded machine). A stream that
    was written out before the server saw its client close is not counted, so `disconnects` may never be
    reached: then this waits out `timeout_s`."""
    names = ("client_disconnects_total", "batches_total")
    deadline = time.perf_counter() + timeout_s
    last, still = None, 0
    while time.perf_counter() < deadline:
        now = (srv.metrics.value("running"), srv.metrics.value("queue_depth"), *(srv.metrics.value(n) for n in names))
        idle = now[0] == 0 and now[1] == 0 and now[2] >= disconnects
        still = still + 1 if now == last and idle else 0
        if still >= 4:
            return
        last = now
        time.sleep(0.05)


def _scenario(name, srv_kw, lm, selector, fn) -> dict:
    from . import IfpruneServer, ServeConfig

    t0 = time.perf_counter()
    with IfpruneServer(lm, selector, ServeConfig(port=0, **srv_kw)) as srv:
        res = fn(srv)
        settle(srv, disconnects=res.get("dropped_by_client", 0))
        res["disconnects_counted"] = srv.metrics.value("client_disconnects_total")
        res["batches"] = srv.metrics.value("batches_total")
    res.update(scenario=name, wall_s=round(time.perf_counter() - t0, 3))
    return res


def run_in_process(lm, selector, *, requests: int, max_tokens: int) -> list[dict]:
    jobs = [{"model": MODELS[i % len(MODELS)], "prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": max_tokens}
            for i in range(requests)]

    def key(j):
        return (j["model"], j["prompt"])

    refs: dict = {}

    def references(srv):  # unbatched greedy text of every distinct request
        for j in jobs:
            if key(j) not in refs:
                refs[key(j)] = request_stream(srv.port, j)["text"]

    def burst(srv, jobs_, per=lambda i: {}):
        with ThreadPoolExecutor(max_workers=len(jobs_)) as pool:
            return list(pool.map(lambda ij: {**request_stream(srv.port, ij[1], **per(ij[0])), "key": key(ij[1])},
                                 enumerate(jobs_)))

    runs = [_scenario("reference (one at a time)", {"max_batch": 1}, lm, selector,
                      lambda s: {**_check([], None), "_": references(s), "requests": len(refs), "complete": len(refs)})]
    runs.append(_scenario("concurrent streams", {"max_batch": 16, "max_queue": 256, "batch_window_s": 0.05}, lm,
                          selector, lambda s: _check(burst(s, jobs), refs)))
    # the leaving clients ask for long streams, so each leaves while the server still has events to write
    # to it (a stream written out before the server saw the close would be, to it, a finished response)
    leaving = [{**j, "max_tokens": max(j["max_tokens"], 192)} if i % 2 else j for i, j in enumerate(jobs)]
    runs.append(_scenario("half the clients disconnect after 2 events", {"max_batch": 16, "max_queue": 256}, lm, selector,
                          lambda s: {**_check(burst(s, leaving, per=lambda i: {"drop_after": 2} if i % 2 else {}),
                                              refs),
                                     "served_after": request_stream(s.port, jobs[0])["text"] == refs[key(jobs[0])]}))
    runs.append(_scenario("slow readers (50 ms per event)", {"max_batch": 16, "max_queue": 256}, lm, selector,
                          lambda s: _check(burst(s, jobs[: max(2, requests // 4)], per=lambda i: {"read_delay_s": 0.05}),
                                           refs)))
    runs.append(_scenario("full queue (max_queue 2, max_batch 1)", {"max_batch": 1, "max_queue": 2, "batch_window_s": 0},
                          lm, selector, lambda s: _check(burst(s, jobs), refs)))
    poison = [{**j, "temperature": 1e-40} if i % 3 == 0 else j for i, j in enumerate(jobs)]
    runs.append(_scenario("poisoned requests in the batch (temperature 1e-40)", {"max_batch": 16, "max_queue": 256,
                                                                                   "batch_window_s": 0.2},
                          lm, selector, lambda s: _check(burst(s, poison), refs)))
    for r in runs:
        r.pop("_", None)
    return runs


def run_sigterm(model_dir: str, *, streams: int, max_tokens: int, drain_s: float) -> dict:
    """`ifprune serve` in a subprocess; SIGTERM while `streams` streams run: each must end with [DONE]
    (its finish reason or an error event) and the process must exit 0 within the drain bound."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-m", "ifprune.cli", "serve", "--model", model_dir, "--port", "0",
                             "--selector", "griffin", "--keep", "0.5", "--threads", "1", "--drain-seconds", str(drain_s),
                             "--max-batch", "1"], stderr=subprocess.PIPE, text=True, env=env)
    err: list[str] = []
    try:
        line = ""
        while "serving" not in line:
            line = proc.stderr.readline()
            if not line:
                raise RuntimeError("ifprune serve exited before serving")
            err.append(line)
        port = int(re.search(r"http://[^:]+:(\d+)/v1", line).group(1))
        threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True).start()
        jobs = [{"model": "ifprune-dense", "prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": max_tokens,
                 "temperature": 1.0, "seed": i} for i in range(streams)]
        with ThreadPoolExecutor(max_workers=streams) as pool:
            futs = [pool.submit(request_stream, port, j) for j in jobs]
            time.sleep(1.0)
            t0 = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            results = [f.result() for f in futs]
        code = proc.wait(drain_s + 60)
        exit_s = time.perf_counter() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    return {"scenario": f"SIGTERM mid-stream (subprocess, drain {drain_s:g} s)", **_check(results, None),
            "exit_code": code, "exit_after_signal_s": round(exit_s, 3)}


def _count(v) -> str:
    return "-" if v is None else f"{v:g}"


def table(res: dict) -> str:
    lines = [f"Model: {res['model']}; {res['platform']}, {res['torch_threads']} torch thread(s), {res['date']}.", "",
             "| scenario | requests | complete | 429 | error events | client drops | drops the server counted | lost | corrupted | differ from reference |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["runs"]:
        lines.append(f"| {r['scenario']} | {r['requests']} | {r['complete']} | {r['rejected_429']} | "
                     f"{r['ended_with_error_event']} | {r['dropped_by_client']} | {_count(r.get('disconnects_counted'))} | {r['lost']} | {r['corrupted']} | "
                     f"{r['differs_from_reference']} |")
    return "\n".join(lines + ["", f"Command: `{res['command']}`", ""])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="a model directory (default: a tiny random Llama)")
    p.add_argument("--requests", type=int, default=24)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--drain-seconds", type=float, default=2.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="write faults.json here")
    args = p.parse_args(argv)
    import torch

    from ..core.plan import Plan
    from ..selection.selectors import make_selector

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        if args.model is None:
            from ..core.tiny import tiny_lm
            from ..export.checkpoint import export_plan

            lm = tiny_lm("llama", d_ffn=48)
            model_dir = os.path.join(tmp, "tiny")
            export_plan(lm, Plan.dense(lm.num_layers, lm.d_ffn), model_dir)
        else:
            from ..core.loading import load_model

            lm, model_dir = load_model(args.model), args.model
        runs = run_in_process(lm, make_selector("griffin"), requests=args.requests, max_tokens=args.max_tokens)
        for drain in (args.drain_seconds, 0.0):  # a drain that lets work finish, and one that cuts it (bounded)
            runs.append(run_sigterm(model_dir, streams=6, max_tokens=max(args.max_tokens, 200), drain_s=drain))
    failures = [r["scenario"] for r in runs if r["lost"] or r["corrupted"] or r["differs_from_reference"]
                or r.get("exit_code", 0) != 0 or r.get("served_after") is False]
    res = {"model": args.model or "tiny random llama (ifprune.core.tiny)", "platform": platform.platform(),
           "cpu_count": os.cpu_count(), "torch_threads": args.threads, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
           "command": "python -m ifprune.serve.faults " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
           "runs": runs, "failures": failures}
    for r in runs:
        print(f"{r['scenario']}: {r['requests']} requests, {r['complete']} complete, {r['rejected_429']} x 429, "
              f"{r['ended_with_error_event']} error events, {r['lost']} lost, {r['corrupted']} corrupted, "
              f"{r['differs_from_reference']} differ from reference"
              + (f" ({r['wall_s']} s)" if "wall_s" in r else f" (exit {r['exit_code']} after {r['exit_after_signal_s']} s)"))
    if args.out:
        write_json(os.path.join(args.out, "faults.json"), res)
        write_text(os.path.join(args.out, "faults.md"), table(res))
    print("FAILED: " + "; ".join(failures) if failures else "all scenarios: nothing lost, nothing corrupted")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
