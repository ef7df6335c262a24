"""How often greedy answers degenerate into a loop ("Paris, Paris, Paris, ...", "1. 1. 1. ..."): teacher-
forced NLL does not see it, a user does. For each held-out prompt (an SFT validation file, as `ifprune eval
nll --data` reads), one greedy answer of `--max-new-tokens` under a trained artifact as it runs by default
(its own `refresh` included, unless `--refresh`; the dense base model without `--checkpoint`), then: does
its tail repeat one short unit of tokens (length 1..8) back to back, at least 3 times and over at least 16
tokens? Per-example rows are appended to `--out`.jsonl (a rerun resumes), the summary to `--out`.json.

    python benchmarks/greedy_loops.py --checkpoint results/training/artifacts/smollm2-135m-keep50-v5 \\
        --data ~/.cache/ifprune/sft_validation_12.jsonl --out results/training/v11/loops_v5 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path


def tail_loop(ids: list[int], max_unit: int = 8, min_repeats: int = 3, min_tokens: int = 16) -> int | None:
    """The length of the unit the answer's tail repeats back to back (>= min_repeats times, >= min_tokens
    tokens in all), else None."""
    for unit in range(1, max_unit + 1):
        reps = 1
        while len(ids) >= (reps + 1) * unit and ids[len(ids) - (reps + 1) * unit: len(ids) - reps * unit] == ids[-unit:]:
            reps += 1
        if reps >= min_repeats and reps * unit >= min_tokens:
            return unit
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="trained artifact directory (default: the dense base model)")
    p.add_argument("--data", required=True, help="JSONL of prompt/response/family (held-out SFT examples)")
    p.add_argument("--out", required=True, help="path stem: STEM.jsonl (per example), STEM.json (summary)")
    p.add_argument("--refresh", type=int, default=None, help="as `generate --refresh` (default: the artifact's)")
    p.add_argument("--refresh-every", action=argparse.BooleanOptionalAction, default=None,
                   help="as `generate --refresh-every` (and its default)")
    p.add_argument("--prefill", choices=("pruned", "dense"), default=None, help="as `generate --prefill`")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)

    import torch

    from ifprune.compensation.calibration import described
    from ifprune.core.loading import load_model
    from ifprune.runtime.generation import SamplingConfig, generate
    from ifprune.selection.refresh import Reselection, resolve_reselection
    from ifprune.selection.selectors import make_selector

    torch.set_num_threads(a.threads)
    lm = load_model()
    if a.checkpoint:
        sel = make_selector("predictor", checkpoint=a.checkpoint)
        sel.artifact.attach(lm)
        width = sel.artifact.width
    else:
        sel, width = make_selector("dense"), lm.d_ffn
    rows_path, summary_path = Path(a.out + ".jsonl"), Path(a.out + ".json")
    done = {}
    if rows_path.is_file():
        for line in rows_path.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by an interruption: that example runs again
            done[r["id"]] = r
    examples = [json.loads(line) for line in Path(a.data).read_text().splitlines() if line.strip()]
    t0 = time.perf_counter()
    with rows_path.open("a") as f:
        for i, ex in enumerate(examples):
            key = f"{i}:{ex['family']}"
            if key in done:
                continue
            res = generate(lm, ex["prompt"], selector=sel, width=width,
                           sampling=SamplingConfig(max_new_tokens=a.max_new_tokens), refresh=a.refresh,
                           refresh_every=a.refresh_every, prefill=a.prefill)
            ids = lm.tokenizer(res.text, add_special_tokens=False)["input_ids"]
            r = {"id": key, "family": ex["family"], "new_tokens": res.new_tokens, "loop_unit": tail_loop(ids),
                 "refreshed": res.refresh is not None, "text": res.text}
            f.write(json.dumps(r) + "\n")
            f.flush()
            os.fsync(f.fileno())
            done[key] = r
            print(f"{len(done)}/{len(examples)} {key} loop={r['loop_unit']}", file=sys.stderr, flush=True)
    rows = [done[k] for k in done]
    fams = sorted({r["family"] for r in rows})
    summary = {"checkpoint": a.checkpoint, "data": a.data, "max_new_tokens": a.max_new_tokens,
               "refresh": a.refresh, "refresh_every": a.refresh_every, "prefill": a.prefill, "examples": len(rows),
               "ran": asdict(resolve_reselection(a.refresh, a.refresh_every, a.prefill, sel) if a.checkpoint
                             else Reselection.off(a.prefill)),  # the settings given resolved: what generated
               "compensation": described(lm),
               "loops": {fam: {"n": len(rs), "looping": sum(r["loop_unit"] is not None for r in rs)}
                         for fam in ["all", *fams] for rs in [[r for r in rows if fam == "all" or r["family"] == fam]]},
               "machine": {"platform": platform.platform(), "processor": platform.processor(), "threads": a.threads},
               "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "wall_s": time.perf_counter() - t0,
               "command": "python benchmarks/greedy_loops.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    tmp = summary_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=1) + "\n")
    tmp.replace(summary_path)
    print(json.dumps(summary["loops"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
