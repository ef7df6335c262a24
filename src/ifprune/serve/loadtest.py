"""Bounded loopback load test: N concurrent requests over 4 task families against an in-process
server, for dense serving and for per-task plans under the two mixed-task batching policies.

    python -m ifprune.serve.loadtest --requests 64 --max-tokens 16 --out results/serve

Requests are interleaved (code, math, writing, qa, code, ...) so that a one-plan-per-batch FIFO
server sees the worst case for mixed traffic; all are sent at once from a thread pool.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import torch

from ..core.paths import write_json, write_text
from .app import IfpruneServer, ServeConfig
from .metrics import quantile

PROMPTS = {  # model alias -> prompts of that family
    "code": ["Write a Python function that reverses a string.", "Write a Python function to check if a number is prime.",
             "Write Python code that counts words in a sentence.", "Write a Python function that merges two sorted lists."],
    "math": ["Tom has 3 apples and buys 5 more. How many apples does he have?", "What is 12 times 7?",
             "A train travels 60 km in 1.5 hours. What is its speed?", "If x + 4 = 10, what is x?"],
    "writing": ["Write a short paragraph about autumn.", "Summarise why sleep matters in two sentences.",
                "Write a polite email declining a meeting.", "Describe a sunset in one sentence."],
    "qa": ["What is the capital of France?", "Who wrote Romeo and Juliet?", "What gas do plants absorb?",
           "How many continents are there?"],
}


def run_scenario(lm, selector, *, name: str, dense: bool, policy: str, requests: int, max_tokens: int,
                 max_batch: int, width: int) -> dict:
    import openai

    cfg = ServeConfig(port=0, width=width, policy=policy, max_batch=max_batch, max_queue=max(64, requests),
                      batch_window_s=0.05)
    fams = list(PROMPTS)
    jobs = [(fams[i % 4], PROMPTS[fams[i % 4]][(i // 4) % 4]) for i in range(requests)]
    with IfpruneServer(lm, selector, cfg) as srv:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0, timeout=1800)
        # warm the plan cache so the run measures serving, not first-time selection
        for fam in fams:
            client.chat.completions.create(model="ifprune-dense" if dense else f"ifprune-{fam}",
                                           messages=[{"role": "user", "content": "hi"}], max_tokens=1)
        batches0 = srv.metrics.value("batches_total")

        def one(job):
            fam, prompt = job
            t0 = time.perf_counter()
            r = client.chat.completions.create(model="ifprune-dense" if dense else f"ifprune-{fam}",
                                               messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens)
            return time.perf_counter() - t0, r.usage.completion_tokens

        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=requests) as pool:
            results = list(pool.map(one, jobs))
        wall = time.perf_counter() - t0
        batches = srv.metrics.value("batches_total") - batches0
    lat = sorted(r[0] for r in results)
    toks = sum(r[1] for r in results)
    return {"scenario": name, "dense": dense, "policy": policy, "requests": requests, "wall_s": wall,
            "completion_tokens": toks, "tokens_per_s": toks / wall, "requests_per_s": requests / wall,
            "latency_p50_s": quantile(lat, 0.5), "latency_p99_s": quantile(lat, 0.99),
            "latency_max_s": lat[-1], "batches": batches, "mean_batch": requests / batches if batches else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None)
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--keep", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from ..core.loading import load_model
    from ..core.plan import width_from_keep
    from ..selection.selectors import make_selector

    lm = load_model(args.model)
    width = width_from_keep(args.keep, None, lm.d_ffn)
    sel = make_selector("griffin")
    common = dict(requests=args.requests, max_tokens=args.max_tokens, max_batch=args.max_batch, width=width)
    runs = [run_scenario(lm, sel, name="dense, batched", dense=True, policy="group", **common),
            run_scenario(lm, sel, name="per-task plans, fifo (one plan per batch)", dense=False, policy="fifo", **common),
            run_scenario(lm, sel, name="per-task plans, group-by-plan", dense=False, policy="group", **common)]
    command = "python -m ifprune.serve.loadtest " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    res = {"model": lm.source, "width": width, "d_ffn": lm.d_ffn, "platform": platform.platform(),
           "cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
           "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": command, "config": vars(args), "runs": runs}
    lines = [f"# Loopback load test: {lm.source}, {args.requests} requests over 4 task families",
             "", f"{args.max_tokens} max new tokens each, max batch {args.max_batch}, compact width {width}/{lm.d_ffn}; "
             f"{res['platform']}, {res['cpu_threads']} torch threads, torch {res['torch']}, {res['date']}.", "",
             "| scenario | wall s | tokens/s | req/s | p50 s | p99 s | batches |", "|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['scenario']} | {r['wall_s']:.1f} | {r['tokens_per_s']:.1f} | {r['requests_per_s']:.2f} | "
                     f"{r['latency_p50_s']:.1f} | {r['latency_p99_s']:.1f} | {r['batches']:.0f} |")
    lines += ["", f"Command: `{command}`", ""]
    md = "\n".join(lines)
    print(md)
    if args.out:
        write_json(f"{args.out}/loadtest.json", res)
        write_text(f"{args.out}/loadtest.md", md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
