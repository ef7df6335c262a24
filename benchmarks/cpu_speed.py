"""The CPU speed table: what a pruned answer costs against the dense model in llama.cpp, on this machine.

Rows, interleaved in every repeat so background load hits each alike (medians of --repeats):
- decode: batch 1, a 64- and a 512-token prompt then 128 greedy tokens (end of turn ignored), per engine:
  llama.cpp on the packaged dense GGUF as users have it; ifprune's llama.cpp runtime (runtime.llamacpp) dense and
  at keep 3/4, 1/2, 1/3 in Q8_0 and Q4_1; ifprune's torch runtime (float32) dense and keep 1/2, decoded by the
  engine `generate()` uses (runtime.lean) and, with --torch-engines lean generate, by `transformers.generate`
  too. Plans are GRIFFIN's of the prompt (speed does not depend on which channels are kept).
- answer: `generate()` end to end (selection, plan load, prefill, decode, re-selection), 128 tokens: the shipped
  default (trained predictor, keep 3/4, re-selection every 32 with a dense prefill) and the dense model, in the
  torch runtime (float32, and int8 with --torch-weights float32 int8) and the llama.cpp runtime (Q8_0).
Each row records bytes of weights read per token and the implied GB/s against this machine's measured memory
bandwidth (a read of a 1 GiB tensor, 1 and 2 threads).

    python benchmarks/cpu_speed.py --threads 1 2 --repeats 5 --out results/speed
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from cpu_decode import PASSAGE  # noqa: E402

from ifprune.core.loading import default_gguf_path, load_model  # noqa: E402
from ifprune.core.paths import write_json, write_text  # noqa: E402
from ifprune.runtime.generation import RuntimeConfig, SamplingConfig, generate  # noqa: E402
from ifprune.runtime.llamacpp import Engine, LlamaCppCompact  # noqa: E402
from ifprune.runtime.lean import LeanDecoder  # noqa: E402
from ifprune.runtime.segment import run_segment  # noqa: E402
from ifprune.selection.selectors import make_selector  # noqa: E402

QUESTION = "\n\nSummarise the passage above in three sentences."


def cpu_info() -> dict:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        out = ""
    info = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in out.splitlines() if ":" in line)}
    flags = set(info.get("Flags", "").split())
    return {"model": info.get("Model name"), "cores": os.cpu_count(), "l3": info.get("L3 cache"),
            "avx2": "avx2" in flags, "avx512f": "avx512f" in flags, "avx512_bf16": "avx512_bf16" in flags,
            "amx": "amx_tile" in flags, "platform": platform.platform()}


def bandwidth(threads: int, repeats: int) -> float:
    """GB/s of a sum over a 1 GiB float32 tensor (a streaming read, as decode is)."""
    torch.set_num_threads(threads)
    x = torch.ones(1 << 28)
    x.sum()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        x.sum()
        times.append(time.perf_counter() - t)
    return x.numel() * 4 / statistics.median(times) / 1e9


def prompt_ids(tok, n: int) -> list[int]:
    """Exactly `n` prompt tokens: the passage repeated, cut, then the question."""
    q = tok(QUESTION, add_special_tokens=False)["input_ids"]
    body = tok(PASSAGE * (n // 40 + 2), add_special_tokens=False)["input_ids"][: n - len(q)]
    return body + q


def decode_row(engine: Engine, ids: list[int], new: int) -> dict:
    sampling = SamplingConfig(max_new_tokens=new, ignore_eos=True)
    t0 = time.perf_counter()
    engine.truncate(0)
    engine.feed(ids)
    t1 = time.perf_counter()
    engine.truncate(0)
    t2 = time.perf_counter()
    run_segment(engine, torch.tensor([ids]), new, sampling, [])
    t3 = time.perf_counter()
    prefill = t1 - t0
    return {"prefill_s": prefill, "answer_s": t3 - t2, "decode_tok_s": (new - 1) / max(1e-9, (t3 - t2) - prefill)}


def torch_row(model, ids: list[int], new: int, engine: str) -> dict:
    if engine == "lean":  # what generate() decodes with (runtime.lean)
        return decode_row(LeanDecoder(model, len(ids) + new), ids, new)
    x = torch.tensor([ids])
    with torch.inference_mode():
        t0 = time.perf_counter()
        model(x)
        t1 = time.perf_counter()
        out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=new, min_new_tokens=new,
                             do_sample=False, temperature=None, top_p=None, top_k=None, pad_token_id=0)
        t2 = time.perf_counter()
    assert out.shape[1] == len(ids) + new
    prefill = t1 - t0
    return {"prefill_s": prefill, "answer_s": t2 - t1, "decode_tok_s": (new - 1) / max(1e-9, (t2 - t1) - prefill)}


def weight_bytes_torch(model) -> int:
    seen, total = set(), 0
    for p in [*model.parameters(), *model.buffers()]:
        if id(p) not in seen and p.dtype in (torch.float32, torch.bfloat16, torch.float16, torch.int8):
            seen.add(id(p))
            total += p.numel() * p.element_size()
    return total


def setting_of(what: str, key: str) -> str | None:
    """The `key` an answer row names ("default prefill=dense reselect=off"), None: as generate runs it."""
    return what.split(f"{key}=", 1)[1].split()[0] if f"{key}=" in what else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--prompts", type=int, nargs="+", default=[64, 512])
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--keeps", type=float, nargs="+", default=[3 / 4, 1 / 2, 1 / 3])
    ap.add_argument("--weights", nargs="+", default=["q8_0", "q4_1"])
    ap.add_argument("--torch-weights", nargs="+", choices=("float32", "int8"), default=["float32"],
                    help="the torch runtime's weight types (int8: --quant int8, core.quantized)")
    ap.add_argument("--torch-engines", nargs="+", choices=("lean", "generate"), default=["lean"],
                    help="what decodes the torch rows: runtime.lean (as generate() does), transformers.generate")
    ap.add_argument("--no-torch", action="store_true", help="skip the torch runtime's rows (slow)")
    ap.add_argument("--answers-only", action="store_true", help="only the generate() rows")
    ap.add_argument("--default-prefills", nargs="+", default=["default"],
                    help="the default's answer rows, one per prefill (selection.prefill; default: as generate runs it); "
                         "'dense-off': a dense prefill and no re-selection")
    ap.add_argument("--out", default="results/speed")
    args = ap.parse_args(argv)
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    res = {"command": "python benchmarks/cpu_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "date": started, "machine": cpu_info(), "loadavg_start": os.getloadavg(), "torch": torch.__version__,
           "new_tokens": args.new_tokens, "repeats": args.repeats, "rows": []}
    try:
        import llama_cpp

        res["llama_cpp_python"] = llama_cpp.__version__
    except ImportError:
        raise SystemExit("needs llama-cpp-python: pip install 'ifprune[llamacpp]'") from None
    res["bandwidth_gb_s"] = {str(t): bandwidth(t, args.repeats) for t in args.threads}
    print("bandwidth GB/s", res["bandwidth_gb_s"], file=sys.stderr)
    torch.set_num_threads(max(args.threads))
    lm = load_model(None)
    tok = lm.tokenizer
    prompts = {n: prompt_ids(tok, n) for n in args.prompts}
    widths = [round(k * lm.d_ffn / 32) * 32 for k in args.keeps]
    plans = {(n, w): make_selector("griffin").select(lm, tok.decode(prompts[n]), w) for n in args.prompts for w in widths}
    packaged = default_gguf_path()
    # the shipped default: its predictor, on the weights its artifact tuned (a second copy of the model); the dense
    # rows run the base weights, as the user has them
    from ifprune.artifacts import default_selection

    sel_name, ckpt = default_selection(None, "float32")
    shipped = make_selector(sel_name, checkpoint=ckpt)
    tuned = load_model(None)
    shipped.artifact.attach(tuned)
    shipped_width = int(shipped.artifact.config["width"])
    for threads in args.threads:
        torch.set_num_threads(threads)
        # engines: (name, engine, width, weights, bytes per token, load(plan) or None)
        rows = [("llama.cpp packaged dense", Engine(packaged, threads=threads, n_ctx=1024), lm.d_ffn, "Q4_1 (packaged)",
                 packaged.stat().st_size, None)]
        for wt in ([] if args.answers_only else args.weights):
            for w in [lm.d_ffn] + widths:
                c = LlamaCppCompact(lm, w, weights=wt, threads=threads, n_ctx=1024)
                name = f"ifprune llama.cpp {'dense' if w == lm.d_ffn else f'keep {w}/{lm.d_ffn}'}"
                rows.append((name, c.engine, w, wt, c.file_bytes, None if w == lm.d_ffn else c.load))
        torch_models = []
        if args.answers_only:
            rows = []
        elif not args.no_torch:
            for tw in args.torch_weights:
                lm.set_quant(None if tw == "float32" else tw)
                dense, _ = lm.dense_decoder()
                torch_models.append(("ifprune torch dense", dense, lm.d_ffn, None, tw))
                c = lm.compact(widths[1] if len(widths) > 1 else widths[0])
                torch_models.append((f"ifprune torch keep {c.width}/{lm.d_ffn}", c.model, c.width, c.load, tw))
            lm.set_quant(None)
        defaults = ["default" if p == "default" else "default prefill=dense reselect=off" if p == "dense-off"
                    else f"default prefill={p}" for p in args.default_prefills]
        tws = [None if tw == "float32" else tw for tw in args.torch_weights]
        answers = [*((d, "torch", tw) for tw in tws for d in defaults), *(("dense", "torch", tw) for tw in tws),
                   *((d, "llamacpp", "q8_0") for d in defaults if setting_of(d, "prefill") != "kept"),  # (torch only)
                   ("dense", "llamacpp", "q8_0")]
        if args.no_torch:
            answers = [a for a in answers if a[1] != "torch"]
        samples: dict = {}
        for what, engine, wt in answers:  # warm-up, not timed: builds each runtime's models once
            generate(tuned if what != "dense" else lm, "Hello.", selector=shipped if what != "dense" else "dense",
                     width=shipped_width if what != "dense" else None, prefill=setting_of(what, "prefill"),
                     reselect=setting_of(what, "reselect") if what != "dense" else None,
                     runtime=RuntimeConfig(engine, wt, threads=threads, n_ctx=1024),
                     sampling=SamplingConfig(max_new_tokens=2))
        for r in range(args.repeats):
            for n in args.prompts:
                ids = prompts[n]
                for name, eng, w, wt, nbytes, load in rows:
                    if load is not None:
                        load(plans[(n, w)])
                    m = decode_row(eng, ids, args.new_tokens)
                    samples.setdefault((name, wt, w, n, nbytes, "llama.cpp"), []).append(m)
                for name, model, w, load, tw in torch_models:
                    if load is not None:
                        load(plans[(n, w)])
                    for te in args.torch_engines:
                        m = torch_row(model, ids, args.new_tokens, te)
                        label = name if te == "lean" else f"{name} [transformers generate]"
                        samples.setdefault((label, tw, w, n, weight_bytes_torch(model), "torch"), []).append(m)
                text = tok.decode(ids)  # as a user's message: the chat template adds its tokens
                for what, engine, wt in answers:
                    shipped.forget()  # each answer selects afresh, as a new prompt would
                    rt = RuntimeConfig(engine, wt, threads=threads, n_ctx=1024)
                    t = time.perf_counter()
                    out = generate(tuned if what != "dense" else lm, text, selector=shipped if what != "dense"
                                   else "dense", width=shipped_width if what != "dense" else None, runtime=rt,
                                   prefill=setting_of(what, "prefill"), reselect=setting_of(what, "reselect") if what != "dense" else None,
                                   sampling=SamplingConfig(max_new_tokens=args.new_tokens, ignore_eos=True))
                    wall = time.perf_counter() - t
                    key = (f"answer {what}", rt.weights or "float32", out.ffn_width, out.prompt_tokens, None, engine)
                    samples.setdefault(key, []).append({"answer_s": wall, **{k: v for k, v in out.timings.items()},
                                                        "reselections": (out.refresh or {}).get("count", 0),
                                                        "prefill": out.prefill, "selector": out.selector})
            print(f"threads {threads}: repeat {r + 1}/{args.repeats} done", file=sys.stderr)
        bw = res["bandwidth_gb_s"][str(threads)]
        for (name, wt, w, n, nbytes, engine), ms in samples.items():
            row = {"row": name, "engine": engine, "weights": wt, "width": w, "d_ffn": lm.d_ffn, "threads": threads,
                   "prompt_tokens": n, "runs": ms}
            for k in ms[0]:
                if isinstance(ms[0][k], (int, float)) and not isinstance(ms[0][k], bool):
                    row[f"median_{k}"] = statistics.median(m[k] for m in ms)
            if nbytes:
                row["weight_bytes"] = nbytes
                row["implied_gb_s"] = nbytes * row["median_decode_tok_s"] / 1e9
                row["of_bandwidth"] = row["implied_gb_s"] / bw
            res["rows"].append(row)
        for _, eng, *_ in rows:
            eng.close()
    res["active_params"] = {str(w): lm.active_params(w) for w in sorted({lm.d_ffn, shipped_width, *widths})}
    out = Path(args.out)
    write_json(out / "speed.json", res)
    write_text(out / "speed.md", render(res))
    print(render(res))
    return 0


def render(res: dict) -> str:
    m = res["machine"]
    lines = ["# CPU speed: ifprune against the dense model in llama.cpp\n",
             f"{res['date']}; {m['model']} ({m['cores']} cores, AVX-512 BF16 {m['avx512_bf16']}, AMX {m['amx']}); "
             f"llama-cpp-python {res.get('llama_cpp_python')}, torch {res['torch']}; {res['new_tokens']} new tokens, "
             f"medians of {res['repeats']} interleaved runs; memory bandwidth (1 GiB read) "
             + ", ".join(f"{v:.1f} GB/s at {t} thread(s)" for t, v in res["bandwidth_gb_s"].items())
             + f". Command: `{res['command']}`\n"]
    for t in sorted({r["threads"] for r in res["rows"]}):
        lines += [f"\n## {t} thread(s)\n", "| row | weights | FFN width | prompt | decode tok/s | x packaged dense | "
                  "s per answer | weights read / token | GB/s (of bandwidth) |", "|---|---|---|---|---|---|---|---|---|"]
        rows = [r for r in res["rows"] if r["threads"] == t]
        base = {r["prompt_tokens"]: r["median_decode_tok_s"] for r in rows if r["row"] == "llama.cpp packaged dense"}
        for r in rows:
            tps = r.get("median_decode_tok_s")
            rel = f"{tps / base[r['prompt_tokens']]:.2f}x" if tps and r["prompt_tokens"] in base else ""
            gb = f"{r['weight_bytes'] / 1e6:.0f} MB" if "weight_bytes" in r else ""
            imp = f"{r['implied_gb_s']:.1f} ({r['of_bandwidth']:.0%})" if "implied_gb_s" in r else ""
            lines.append(f"| {r['row']} | {r['weights']} | {r['width']} | {r['prompt_tokens']} | "
                         f"{tps:.1f} | {rel} | {r['median_answer_s']:.2f} | {gb} | {imp} |" if tps else
                         f"| {r['row']} | {r['weights']} | {r['width']} | {r['prompt_tokens']} | | | "
                         f"{r['median_answer_s']:.2f} | | |")
    lines += answer_ratios(res)
    return "\n".join(lines) + "\n"


def answer_ratios(res: dict) -> list[str]:
    """Per engine, prompt and default row: dense's seconds per answer over the default's (median of the
    per-repeat ratios of interleaved runs), against the ideal ratio total / active parameters."""
    out = []
    for r in res["rows"]:
        if not r["row"].startswith("answer default"):
            continue
        dense = next((d for d in res["rows"] if d["row"] == "answer dense" and d["engine"] == r["engine"]
                      and d["weights"] == r["weights"] and d["threads"] == r["threads"] and d["prompt_tokens"] == r["prompt_tokens"]), None)
        if dense is None:
            continue
        ratio = statistics.median(d["answer_s"] / x["answer_s"] for d, x in zip(dense["runs"], r["runs"]))
        ideal = res["active_params"][str(r["d_ffn"])] / res["active_params"][str(r["width"])]
        out.append(f"| {r['threads']} | {r['engine']} {r['weights']} | {r['prompt_tokens']} | {r['row']} | "
                   f"{dense['median_answer_s']:.2f} | {r['median_answer_s']:.2f} | {ratio:.3f}x | {ideal:.3f}x | "
                   f"{ratio / ideal:.2f} |")
    if not out:
        return []
    return ["\n## Answers: the default against dense at the same weights\n",
            "| threads | runtime | prompt | row | dense s | row s | speed-up (median of per-run ratios) | ideal "
            "(total / active params) | of ideal |", "|---|---|---|---|---|---|---|---|---|", *out]


if __name__ == "__main__":
    sys.exit(main())
