"""What one re-selected answer token costs against what pruning saves on it, per engine, on this CPU.

Re-selection every R tokens pays, per segment of R answer tokens, a pass that reads them (dense-answer: the full
model over the R tokens; kept: the dropped channels' gate and up rows over their recorded FFN inputs) and a plan
load; pruning saves, per decoded token, the dense step minus the compact step. Dividing the first by R gives the
per-token cost to set against the per-token saving: re-selection pays for itself only when it is below it.
Rows, interleaved in every repeat (medians of --repeats), keep 3/4, the packaged model with GRIFFIN plans of the
prompt (cost does not depend on which channels are kept), after a --prompts-token prompt:
- decode ms/token, dense and compact: torch int8 (runtime.lean) and llama.cpp Q8_0 (runtime.llamacpp);
- dense-answer's pass (selection.refresh.seen_scores, torch int8) and a full-model llama.cpp batch of R tokens;
- kept's pass (selection.decoded.kept_squares) over R recorded tokens;
- plan loads: torch int8 (fresh, and in place as a re-selection does) and llama.cpp Q8_0;
- how fast torch's int8 product streams the FFN weights of all layers against the machine's read bandwidth.

    python benchmarks/reselection_cost.py --threads 1 --repeats 5 --out results/speed/reselection_cost
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from cpu_speed import bandwidth, cpu_info, prompt_ids  # noqa: E402

from ifprune.core.loading import load_model  # noqa: E402
from ifprune.core.paths import write_json, write_text  # noqa: E402
from ifprune.runtime.lean import LeanDecoder  # noqa: E402
from ifprune.runtime.llamacpp import LlamaCppCompact  # noqa: E402
from ifprune.selection.decoded import AnswerInputs, kept_squares  # noqa: E402
from ifprune.selection.refresh import prompt_pass, seen_scores  # noqa: E402
from ifprune.selection.selectors import make_selector  # noqa: E402


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def per_token_decode(engine, prompt: list[int], n: int) -> float:
    """ms per token of `n` single-token steps after `prompt`."""
    engine.truncate(0)
    engine.feed(prompt)
    return timed(lambda: [engine.feed([100 + k]) for k in range(n)]) / n * 1e3


def int8_stream_gb_s(lm) -> float:
    """GB/s at which the int8 product reads every layer's FFN weights at one token (a streaming read: together they
    exceed the caches)."""
    store = lm.quantized_weights()
    x = {n: torch.randn(1, n, dtype=torch.bfloat16) for n in (lm.model.config.hidden_size, lm.d_ffn)}
    mats = [(q, s) for layer in store.ffn for q, s, _ in (*layer["up"], layer["down"])]

    def run():
        for q, s in mats:
            torch.ops.aten._weight_int8pack_mm(x[q.shape[1]], q, s)

    run()
    return sum(q.numel() for q, _ in mats) / timed(run) / 1e9


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prompts", type=int, nargs="+", default=[64, 512])
    ap.add_argument("--tokens", type=int, default=32, help="answer tokens between re-selections (R)")
    ap.add_argument("--keep", type=float, default=0.75)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default="results/speed/reselection_cost")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    res = {"command": "python benchmarks/reselection_cost.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "machine": cpu_info(),
           "loadavg_start": os.getloadavg(), "torch": torch.__version__, "threads": args.threads, "R": args.tokens,
           "keep": args.keep, "bandwidth_gb_s": bandwidth(args.threads, args.repeats), "rows": {}}
    torch.set_num_threads(args.threads)
    lm = load_model(None)
    R, width = args.tokens, round(args.keep * lm.d_ffn / 32) * 32
    lm.set_quant("int8")
    dense_model, _ = lm.dense_decoder()
    compact = lm.compact(width)
    lc_dense = LlamaCppCompact(lm, lm.d_ffn, weights="q8_0", threads=args.threads, n_ctx=2048)
    lc = LlamaCppCompact(lm, width, weights="q8_0", threads=args.threads, n_ctx=2048)
    lc_dense.engine.n_batch = 1024  # (one batch for the longest prompt)
    prompts = {n: prompt_ids(lm.tokenizer, n) for n in args.prompts}
    sel = make_selector("griffin")
    plans = {n: sel.select(lm, lm.tokenizer.decode(p), width) for n, p in prompts.items()}
    other = {n: sel.select(lm, lm.tokenizer.decode(p[: n // 2]), width) for n, p in prompts.items()}
    answer = list(range(200, 200 + R))
    samples: dict = {}

    def add(key, value):
        samples.setdefault(key, []).append(value)

    for r in range(-1, args.repeats):  # (repeat -1: a warm-up, not kept)
        if r == 0:
            samples.clear()
        for n, prompt in prompts.items():
            compact.load(plans[n])
            lc.load(plans[n])
            max_len = len(prompt) + 2 * R + 2
            add((n, "torch int8 decode dense, ms/token"), per_token_decode(LeanDecoder(dense_model, max_len), prompt, R))
            add((n, "torch int8 decode compact, ms/token"), per_token_decode(LeanDecoder(compact.model, max_len), prompt, R))
            add((n, "llama.cpp q8_0 decode dense, ms/token"), per_token_decode(lc_dense.engine, prompt, R))
            add((n, "llama.cpp q8_0 decode compact, ms/token"), per_token_decode(lc.engine, prompt, R))
            ids = torch.tensor([prompt])
            _, state = prompt_pass(lm, ids)
            seq = torch.tensor(prompt + answer)
            add((n, "torch int8 dense-answer pass, ms/token"), timed(lambda: seen_scores(lm, seq, state)) / R * 1e3)
            lc_dense.engine.truncate(0)
            lc_dense.engine.feed(prompt)
            add((n, "llama.cpp q8_0 dense pass, ms/token"), timed(lambda: lc_dense.engine.feed(answer)) / R * 1e3)
            rec = AnswerInputs(lm.num_layers)
            eng = LeanDecoder(compact.model, max_len)
            eng.feed(prompt)
            with rec.record(compact.compact_layout, engine=eng):
                for t in answer:
                    eng.feed([t])
            xs, acts = rec.take()
            slots = compact.channels()
            add((n, "torch int8 kept pass, ms/token"), timed(lambda: kept_squares(lm, xs, acts, slots)) / R * 1e3)
            add((n, "torch int8 plan load (fresh), ms"), timed(lambda: compact.load(other[n])) * 1e3)
            add((n, "torch int8 plan load (re-selection, in place), ms"),
                timed(lambda: compact.load(plans[n], reuse=True)) * 1e3)
            add((n, "llama.cpp q8_0 plan load, ms"), timed(lambda: lc.load(other[n])) * 1e3)
        add(("all", "torch int8 product streaming the FFN weights, GB/s"), int8_stream_gb_s(lm))
        print(f"repeat {r + 1}/{args.repeats} done" if r >= 0 else "warm-up done", file=sys.stderr)
    for (n, name), vals in samples.items():
        res["rows"].setdefault(str(n), {})[name] = {"median": statistics.median(vals), "runs": vals}
    for n in map(str, args.prompts):
        rows = res["rows"][n]
        med = {k: v["median"] for k, v in rows.items()}
        derived = {}
        for eng, load in (("torch int8", "torch int8 plan load (re-selection, in place), ms"),
                          ("llama.cpp q8_0", "llama.cpp q8_0 plan load, ms")):
            saving = med[f"{eng} decode dense, ms/token"] - med[f"{eng} decode compact, ms/token"]
            derived[f"{eng}: saving per decoded token, ms"] = saving
            passes = [("dense-answer", "torch int8 dense-answer pass, ms/token")]
            if eng == "torch int8":
                passes.append(("kept", "torch int8 kept pass, ms/token"))
            for mode, key in passes:
                derived[f"{eng}: {mode} cost per answer token (pass + load / R), ms"] = med[key] + med[load] / R
        res["rows"][n]["derived"] = derived
    out = Path(args.out)
    write_json(out / "cost.json", res)
    write_text(out / "cost.md", render(res))
    print(render(res))
    return 0


def render(res: dict) -> str:
    lines = ["# Re-selection cost against pruning's saving, per answer token", "",
             f"{res['date']}; {res['machine']['model']} ({res['machine']['cores']} cores, AVX-512 BF16 "
             f"{res['machine']['avx512_bf16']}, AMX {res['machine']['amx']}); torch {res['torch']}; "
             f"{res['threads']} thread(s); keep {res['keep']}, R = {res['R']}; read bandwidth "
             f"{res['bandwidth_gb_s']:.1f} GB/s; medians of the interleaved runs. Command: `{res['command']}`", ""]
    prompts = [k for k in res["rows"] if k != "all"]
    names = [k for k in res["rows"][prompts[0]] if k != "derived"]
    lines += ["| measured | " + " | ".join(f"{p}-token prompt" for p in prompts) + " |",
              "|---|" + "---|" * len(prompts)]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(f"{res['rows'][p][name]['median']:.2f}" for p in prompts) + " |")
    for name, v in res["rows"].get("all", {}).items():
        lines.append(f"| {name} | {v['median']:.1f} (all prompts) |" + " |" * (len(prompts) - 1))
    lines += ["", "| derived | " + " | ".join(f"{p}-token prompt" for p in prompts) + " |",
              "|---|" + "---|" * len(prompts)]
    for name in res["rows"][prompts[0]]["derived"]:
        lines.append(f"| {name} | " + " | ".join(f"{res['rows'][p]['derived'][name]:.2f}" for p in prompts) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
