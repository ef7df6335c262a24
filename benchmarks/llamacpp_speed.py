"""CPU speed table: llama.cpp (llama-cpp-python) decoding GGUF exports of the default model, dense and
pruned at keep 1/2 and 3/4, at the same quantisation, next to ifprune's own CPU decode of the same
compact models; same prompt, same thread count, median of N runs, interleaved so background load hits
every row alike. The plans are magnitude plans (static: one plan per width, so every run decodes the
same model); weights are the base model's (speed does not depend on which channels are kept).

    pip install -e ".[llamacpp]"     # builds llama.cpp with the machine's cmake and gcc
    python benchmarks/llamacpp_speed.py --threads 1 --out results/llamacpp
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from cpu_decode import PASSAGE, linear_flops_per_token  # noqa: E402

from ifprune.core.loading import load_model  # noqa: E402
from ifprune.core.paths import write_json, write_text  # noqa: E402
from ifprune.core.plan import Plan  # noqa: E402
from ifprune.export.gguf import export_gguf  # noqa: E402
from ifprune.runtime.generation import SamplingConfig, generate  # noqa: E402
from ifprune.selection.selectors import make_selector  # noqa: E402


def llamacpp_run(llm, tokens: list[int], new_tokens: int) -> dict:
    """Prefill the prompt, then greedy-decode `new_tokens` one at a time; seconds for each phase."""
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(tokens)
    t1 = time.perf_counter()
    for _ in range(new_tokens - 1):
        llm.eval([int(np.argmax(llm.scores[llm.n_tokens - 1]))])
    t2 = time.perf_counter()
    return {"prefill_s": t1 - t0, "decode_s": t2 - t1, "decode_tok_s": (new_tokens - 1) / (t2 - t1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--keeps", type=float, nargs="+", default=[1 / 2, 3 / 4])
    ap.add_argument("--gguf-type", default="q8_0")
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="results/llamacpp")
    args = ap.parse_args(argv)
    try:
        from llama_cpp import Llama, __version__ as llama_cpp_version
    except ImportError:
        print("llama-cpp-python is not installed: pip install -e '.[llamacpp]' (builds llama.cpp)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    started = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "loadavg_start": os.getloadavg()}
    lm = load_model(args.model)
    ids = lm.tokenizer(PASSAGE * 20)["input_ids"][: args.prompt_tokens - 40]
    prompt = "Summarise this text in one paragraph:\n" + lm.tokenizer.decode(ids)
    sampling = SamplingConfig(max_new_tokens=args.new_tokens, ignore_eos=True)
    selector = make_selector("magnitude")
    configs = [("dense", lm.d_ffn)] + [(f"keep {k:.3f}", round(k * lm.d_ffn)) for k in args.keeps]
    tmp = Path(tempfile.mkdtemp(prefix="ifprune-llamacpp-"))
    llms, flops = {}, {}
    for name, width in configs:
        plan = Plan.dense(lm.num_layers, lm.d_ffn) if width == lm.d_ffn else selector.select(lm, None, width)
        path = tmp / f"{width}.gguf"
        export_gguf(lm, plan, path, qtype=args.gguf_type)
        llms[name] = Llama(model_path=str(path), n_ctx=args.prompt_tokens + args.new_tokens + 16, n_threads=args.threads,
                           n_threads_batch=args.threads, verbose=False)
        flops[name] = linear_flops_per_token(lm.model if width == lm.d_ffn else lm.compact(width).model)
        print(f"exported {name}: {path.stat().st_size / 1e6:.1f} MB", file=sys.stderr)
    tokens = llms["dense"].tokenize(prompt.encode(), add_bos=True)
    runs = {(eng, name): [] for eng in ("llama.cpp", "ifprune") for name, _ in configs}
    for name, _ in configs:  # warm-up
        llamacpp_run(llms[name], tokens, 4)
    generate(lm, prompt, sampling=SamplingConfig(max_new_tokens=4, ignore_eos=True))
    for rep in range(args.repeats):
        for name, width in configs:
            runs[("llama.cpp", name)].append(llamacpp_run(llms[name], tokens, args.new_tokens))
            r = generate(lm, prompt, selector=selector if width < lm.d_ffn else "dense", width=width, sampling=sampling)
            runs[("ifprune", name)].append({"prefill_s": r.timings["prefill_s"], "decode_s": r.timings["decode_s"],
                                            "decode_tok_s": (r.new_tokens - 1) / r.timings["decode_s"]})
            print(f"rep {rep} {name}: llama.cpp {runs[('llama.cpp', name)][-1]['decode_tok_s']:.1f} tok/s, ifprune "
                  f"{runs[('ifprune', name)][-1]['decode_tok_s']:.1f} tok/s", file=sys.stderr)
    rows = []
    for eng in ("llama.cpp", "ifprune"):
        dense = statistics.median(x["decode_tok_s"] for x in runs[(eng, "dense")])
        for name, width in configs:
            tps = statistics.median(x["decode_tok_s"] for x in runs[(eng, name)])
            ratio = flops["dense"] / flops[name]
            rows.append({"engine": eng, "config": name, "ffn_width": width,
                         "weights": f"GGUF {args.gguf_type.upper()}" if eng == "llama.cpp" else str(next(lm.model.parameters()).dtype),
                         "median_decode_tok_s": tps, "median_prefill_s": statistics.median(x["prefill_s"] for x in runs[(eng, name)]),
                         "speedup_vs_dense": tps / dense, "flops_ratio": ratio, "speedup_over_flops_ratio": tps / dense / ratio,
                         "runs": runs[(eng, name)]})
    result = {"benchmark": "llamacpp_speed", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": "python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])]), "model": lm.source,
              "llama_cpp_python": llama_cpp_version, "torch": torch.__version__, "threads": args.threads,
              "prompt_tokens": len(tokens), "new_tokens": args.new_tokens, "repeats": args.repeats,
              "machine": {**started, "loadavg_end": os.getloadavg()}, "rows": rows}
    os.makedirs(args.out, exist_ok=True)
    write_json(os.path.join(args.out, "llamacpp_speed.json"), result)
    lines = [f"# CPU decode: llama.cpp vs ifprune ({lm.source})", "",
             f"{result['date']}; batch 1, {len(tokens)}-token prompt, {args.new_tokens} new tokens (greedy), median of "
             f"{args.repeats}, {args.threads} thread(s); llama-cpp-python {llama_cpp_version}, torch {torch.__version__}; "
             f"{started['platform']}, load average {started['loadavg_start'][0]:.1f} at start. Command: `{result['command']}`",
             "", "| engine | weights | config | FFN width | decode tok/s | speed-up vs its dense | FLOPs ratio | speed-up / FLOPs ratio | prefill ms |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['engine']} | {r['weights']} | {r['config']} | {r['ffn_width']} | {r['median_decode_tok_s']:.1f} | "
                     f"{r['speedup_vs_dense']:.2f}x | {r['flops_ratio']:.2f} | {r['speedup_over_flops_ratio']:.2f} | "
                     f"{r['median_prefill_s'] * 1e3:.0f} |")
    write_text(os.path.join(args.out, "llamacpp_speed.md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
