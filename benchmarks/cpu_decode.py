"""CPU decode benchmark: compact (physically pruned) vs dense on the default model.

Batch 1, a ~256-token prompt, 64 new tokens (EOS ignored), greedy; median over repetitions, with
dense and compact runs interleaved so background load hits both alike. Writes JSON + markdown.

    python benchmarks/cpu_decode.py --out results/cpu_decode
    python benchmarks/cpu_decode.py --decoder compiled --out results/cpu_decode_compiled

`--decoder`: `generate` (ifprune's `generate`, HF generate with its per-token logits processing and
streamer), `static` (runtime.fastdecode.StaticDecoder: pre-allocated static KV cache, a one-token
greedy step, no per-token Python beyond the loop) or `compiled` (the same step under torch.compile,
inductor on CPU: fused kernels, less per-op overhead; compiled once per model before timing).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time

import torch

from ifprune.runtime.generation import SamplingConfig, generate
from ifprune.core.loading import load_model
from ifprune.core.paths import write_json, write_text
from ifprune.selection.selectors import make_selector

PASSAGE = (
    "The history of the printing press begins in the fifteenth century, when movable type made books far "
    "cheaper to produce. Within fifty years presses operated in more than two hundred European cities, and "
    "the number of books in circulation grew from thousands to millions. Scholars could compare texts, "
    "merchants could share prices, and ordinary readers gained access to pamphlets, calendars and news. "
)


def linear_flops_per_token(model) -> int:
    """2 x the parameters of every Linear/Conv1D weight (embedding lookups are not matmuls)."""
    total = 0
    for mod in model.modules():
        w = getattr(mod, "weight", None)
        if isinstance(w, torch.Tensor) and w.dim() == 2 and not isinstance(mod, torch.nn.Embedding):
            total += 2 * w.numel()
    return total


def machine() -> dict:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "loadavg_start": os.getloadavg()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--keeps", type=float, nargs="+", default=[1 / 2, 1 / 3])
    ap.add_argument("--selector", default="magnitude", help="plan source (static, so every run uses the same plan)")
    ap.add_argument("--decoder", choices=["generate", "static", "compiled"], default="generate")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--out", default="results/cpu_decode")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    started = machine()
    lm = load_model(args.model)
    ids = lm.tokenizer(PASSAGE * 20)["input_ids"][: args.prompt_tokens - 40]
    prompt = "Summarise this text in one paragraph:\n" + lm.tokenizer.decode(ids)
    sampling = SamplingConfig(max_new_tokens=args.new_tokens, ignore_eos=True)
    selector = make_selector(args.selector)
    configs = [("dense", lm.d_ffn)] + [(f"keep {k:.3f}", round(k * lm.d_ffn)) for k in args.keeps]
    dense_flops = linear_flops_per_token(lm.model)

    runs: dict[str, list[dict]] = {name: [] for name, _ in configs}
    decoders = {}
    if args.decoder == "generate":
        generate(lm, prompt, selector=selector, width=configs[-1][1], sampling=sampling)  # warm-up (allocations)
        generate(lm, prompt, sampling=sampling)
    else:
        from ifprune.runtime.fastdecode import StaticDecoder
        from ifprune.core.prompting import encode_prompt

        prompt_ids = encode_prompt(lm.tokenizer, prompt, chat=True)
        for name, width in configs:  # one model per width, each with its plan loaded once (static plans)
            model = lm.model
            if width < lm.d_ffn:
                model = lm.compact(width).model
                lm.compact(width).load(selector.select(lm, prompt, width))
            decoders[name] = StaticDecoder(model, prompt_ids.shape[1] + args.new_tokens + 8,
                                           compile=args.decoder == "compiled", mode=None)
            t_c = time.perf_counter()
            decoders[name].generate(prompt_ids, 4)  # compiles (once) and warms up
            print(f"{name}: warm-up {time.perf_counter() - t_c:.1f} s", file=sys.stderr)
    for rep in range(args.repeats):
        for name, width in configs:
            if decoders:
                _, t = decoders[name].generate(prompt_ids, args.new_tokens)
                runs[name].append({"decode_tok_s": (t.new_tokens - 1) / t.decode_s, "prefill_s": t.prefill_s,
                                   "decode_s": t.decode_s, "prompt_tokens": int(prompt_ids.shape[1]),
                                   "new_tokens": t.new_tokens})
            else:
                r = generate(lm, prompt, selector=selector if width < lm.d_ffn else "dense", width=width,
                             sampling=sampling)
                t = r.timings
                runs[name].append({"decode_tok_s": (r.new_tokens - 1) / t["decode_s"], **t,
                                   "prompt_tokens": r.prompt_tokens, "new_tokens": r.new_tokens})
            print(f"rep {rep} {name:12s} decode {runs[name][-1]['decode_tok_s']:.1f} tok/s "
                  f"prefill {runs[name][-1]['prefill_s'] * 1e3:.0f} ms", file=sys.stderr)

    rows = []
    dense_tps = statistics.median(x["decode_tok_s"] for x in runs["dense"])
    for name, width in configs:
        compact_model = lm.model if width == lm.d_ffn else lm.compact(width).model
        flops = linear_flops_per_token(compact_model)
        tps = statistics.median(x["decode_tok_s"] for x in runs[name])
        # gathering a *new* plan (the timed runs reuse one static plan, whose reload is a no-op)
        gather = []
        if width < lm.d_ffn:
            for seed in range(5):
                gather.append(lm.compact(width).load(make_selector("random", seed=100 + seed).select(lm, None, width)))
        ratio = dense_flops / flops
        rows.append({
            "config": name, "ffn_width": width, "active_params": lm.active_params(width),
            "median_decode_tok_s": tps, "median_prefill_s": statistics.median(x["prefill_s"] for x in runs[name]),
            "median_new_plan_loading_s": statistics.median(gather) if gather else 0.0,
            "speedup_vs_dense": tps / dense_tps, "weight_flops_per_token": flops, "flops_ratio_dense_over_this": ratio,
            "speedup_over_flops_ratio": (tps / dense_tps) / ratio,
            "runs": runs[name],
        })
    result = {
        "benchmark": "cpu_decode", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python " + " ".join([sys.argv[0], *(argv or sys.argv[1:])]),
        "model": lm.source, "selector": args.selector, "decoder": args.decoder, "batch": 1, "prompt_tokens": rows[0]["runs"][0]["prompt_tokens"],
        "new_tokens": args.new_tokens, "repeats": args.repeats, "dtype": str(next(lm.model.parameters()).dtype),
        "machine": {**started, "loadavg_end": os.getloadavg()}, "rows": rows,
    }
    os.makedirs(args.out, exist_ok=True)
    write_json(os.path.join(args.out, "cpu_decode.json"), result)
    lines = [f"# CPU decode: compact vs dense ({lm.source}, decoder: {args.decoder})", "",
             f"{result['date']}; batch 1, {result['prompt_tokens']}-token prompt, {args.new_tokens} new tokens, "
             f"median of {args.repeats}; {result['machine']['platform']}, {result['machine']['cpu_count']} CPUs, "
             f"torch {torch.__version__}, load average {result['machine']['loadavg_start'][0]:.1f} at start. "
             f"Command: `{result['command']}`", "",
             "| config | FFN width | active params | decode tok/s | speed-up | FLOPs ratio | speed-up / FLOPs ratio | prefill ms | loading a new plan, ms |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['config']} | {r['ffn_width']} | {r['active_params'] / 1e6:.1f}M | {r['median_decode_tok_s']:.2f} | "
                     f"{r['speedup_vs_dense']:.2f}x | {r['flops_ratio_dense_over_this']:.2f} | {r['speedup_over_flops_ratio']:.2f} | "
                     f"{r['median_prefill_s'] * 1e3:.0f} | {r['median_new_plan_loading_s'] * 1e3:.1f} |")
    write_text(os.path.join(args.out, "cpu_decode.md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
