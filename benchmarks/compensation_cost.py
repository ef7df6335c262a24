"""What output compensation costs on the default model: the one-off statistics (time, tokens, bytes
on disk and in memory; the moments pass's speed in float32 and bf16), the per-plan refit at load time (cold and cached), and decode speed with and
without it (same shapes, so it must not change). Writes JSON + markdown.

    python benchmarks/compensation_cost.py --threads 2 --out results/compensation
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--plans", type=int, default=5)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--gather-tokens", type=int, default=8192, help="tokens of the packaged mix timed per precision")
    a = p.parse_args()
    torch.set_num_threads(a.threads)

    from ifprune.compensation.calibration import (
        CompensationConfig, calibration_rows, collect_moments, compensate, layer_stats, moments_precision, stats_path,
    )
    from ifprune.core.loading import load_model
    from ifprune.core.plan import Plan
    from ifprune.core.prompting import encode_prompt

    lm = load_model()
    cfg = CompensationConfig()
    rss0 = rss_mb()
    t0 = time.perf_counter()
    stats = layer_stats(lm, cfg, progress=False)  # from the cache when it exists (see "stats_source")
    read_s = time.perf_counter() - t0
    path = stats_path(lm.fingerprint(), stats.calibration_sha, cfg.max_tokens, cfg.seq_len)
    comp = compensate(lm, cfg)
    comp.stats = stats
    t0 = time.perf_counter()
    comp._weights()
    cross_s = time.perf_counter() - t0
    res = {"model": lm.source, "threads": a.threads, "platform": platform.platform(), "torch": torch.__version__,
           "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "config": cfg.describe(), "stats_tokens": stats.tokens,
           "stats_file_bytes": path.stat().st_size, "stats_memory_bytes": stats.nbytes(),
           "stats_read_or_compute_s": read_s, "cross_moment_precompute_s": cross_s,
           "rss_mb_before_stats": rss0, "rss_mb_after_stats": rss_mb(), "widths": {}}
    rows = calibration_rows(lm.tokenizer, None, a.gather_tokens, cfg.seq_len)
    n = sum(len(r) for r in rows)
    res["moments_pass"] = {"tokens": n, "default_precision": moments_precision(lm)}
    for precision in ("native", "bf16"):
        t0 = time.perf_counter()
        collect_moments(lm, rows, progress=False, precision=precision)
        res["moments_pass"][f"{precision}_tok_s"] = n / (time.perf_counter() - t0)
    ids = encode_prompt(lm.tokenizer, "Write a short story about a robot who learns to paint.")
    for keep in (0.75, 0.5, 1 / 3):
        width = round(keep * lm.d_ffn)
        g = torch.Generator().manual_seed(0)
        plans = [Plan.from_scores(torch.rand(lm.num_layers, lm.d_ffn, generator=g), width) for _ in range(a.plans)]
        row = {}
        for mode in ("none", "calibration"):
            if mode == "none":
                lm.set_compensator(None)
            else:
                lm.set_compensator(comp)
            compact = lm.compact(width)
            compact.load(plans[0])
            loads = []
            for plan in plans[1:]:
                loads.append(compact.load(plan))
            cached = None
            if mode == "calibration":
                compact.load(plans[1])  # back to a plan refit before: from the per-plan cache
                cached = compact.load(plans[2])
            with torch.inference_mode():
                compact.model.generate(ids, max_new_tokens=4, do_sample=False, min_new_tokens=4)
                t0 = time.perf_counter()
                compact.model.generate(ids, max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens,
                                       do_sample=False)
                gen_s = time.perf_counter() - t0
            row[mode] = {"load_ms_median": 1e3 * statistics.median(loads), "load_ms_all": [1e3 * x for x in loads],
                         "cached_load_ms": None if cached is None else 1e3 * cached,
                         "generate_tok_s": a.new_tokens / gen_s}
        res["widths"][str(width)] = row
    res["rss_mb_end"] = rss_mb()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cost.json").write_text(json.dumps(res, indent=2) + "\n")
    lines = ["# Output compensation: cost on the default model", "",
             f"{res['model']}, {res['platform']}, torch {res['torch']}, {a.threads} threads, {res['date']}. "
             f"Command: `python benchmarks/compensation_cost.py --threads {a.threads} --out {a.out}`.", "",
             f"- statistics: {res['stats_tokens']} calibration tokens; {res['stats_file_bytes'] / 1e6:.0f} MB on disk "
             f"(float32 G per layer), {res['stats_memory_bytes'] / 1e6:.0f} MB in memory; read from the cache in "
             f"{read_s:.1f} s here (computing them is a one-off pass, timed in the sweep log); W @ G precompute "
             f"{cross_s:.1f} s once per model",
             f"- the moments pass ({n} tokens of the packaged mix): {res['moments_pass']['native_tok_s']:.0f} tokens/s "
             f"in float32, {res['moments_pass']['bf16_tok_s']:.0f} under bf16 autocast (this machine's default: "
             f"{res['moments_pass']['default_precision']}), so {res['stats_tokens']} tokens take "
             f"{res['stats_tokens'] / res['moments_pass']['native_tok_s']:.0f} s or "
             f"{res['stats_tokens'] / res['moments_pass']['bf16_tok_s']:.0f} s",
             f"- resident memory: {rss0:.0f} MB before, {res['rss_mb_after_stats']:.0f} MB with the statistics, "
             f"{res['rss_mb_end']:.0f} MB at the end (refits of 4 plans per width cached)", "",
             "| width | loading ms, plain (median) | loading ms, refit (median) | loading ms, refit cached | "
             f"generate tok/s plain | generate tok/s refit ({a.new_tokens} tokens) |", "|---|---|---|---|---|---|"]
    for w, row in res["widths"].items():
        lines.append(f"| {w}/{lm.d_ffn} | {row['none']['load_ms_median']:.1f} | {row['calibration']['load_ms_median']:.0f} | "
                     f"{row['calibration']['cached_load_ms']:.1f} | {row['none']['generate_tok_s']:.1f} | "
                     f"{row['calibration']['generate_tok_s']:.1f} |")
    (out / "cost.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
