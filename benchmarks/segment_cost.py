"""What re-selection costs a whole answer through `ifprune generate`'s path (runtime.generation.generate, HF
dynamic cache, batch 1): wall time per answer, dense vs a trained artifact once per row of (re-selection: off,
once after R, after every R) x (prefill: pruned, dense), at each prompt length. Every answer is forced to
`--new-tokens` tokens (ignore EOS), greedy; median of `--repeats` answers after one warm-up. Prompts are real
held-out text (the first rows of `--data`, an SFT validation file) cut to the token count.

    python benchmarks/segment_cost.py --data ~/.cache/ifprune/sft_validation_12.jsonl --threads 2 \\
        --out results/refresh/every/cost.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROWS = [("dense", None, False, "pruned"), ("off", 0, False, "pruned"), ("once", None, False, "pruned"),
        ("once", None, False, "dense"), ("every", None, True, "pruned"), ("every", None, True, "dense")]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="src/ifprune/artifacts/smollm2-135m-keep75")
    p.add_argument("--data", required=True)
    p.add_argument("--prompt-tokens", type=int, nargs="+", default=[64, 512])
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--refresh", type=int, default=32, help="R for the once / every rows")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)

    import torch

    from ifprune.core.loading import load_model
    from ifprune.runtime.generation import SamplingConfig, generate
    from ifprune.selection.selectors import make_selector

    torch.set_num_threads(a.threads)
    lm = load_model()
    sel = make_selector("predictor", checkpoint=a.checkpoint)
    sel.artifact.attach(lm)
    text = " ".join(json.loads(x)["prompt"] for x in Path(a.data).read_text().splitlines() if x.strip())
    words = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    sampling = SamplingConfig(max_new_tokens=a.new_tokens, ignore_eos=True)
    results = []
    for n in a.prompt_tokens:
        prompt = lm.tokenizer.decode(words[:n])
        for name, refresh, every, prefill in ROWS:
            kw = dict(selector=make_selector("dense"), width=lm.d_ffn) if name == "dense" else dict(
                selector=sel, width=sel.artifact.width, refresh=a.refresh if refresh is None else refresh,
                refresh_every=every, prefill=prefill)
            times, res = [], None
            for i in range(a.repeats + 1):
                sel._plans.clear(), sel._recent.clear()  # every answer selects anew (a new prompt's cost)
                sel._state = None
                t0 = time.perf_counter()
                res = generate(lm, prompt, sampling=sampling, **kw)
                if i:
                    times.append(time.perf_counter() - t0)
            row = {"row": name, "prefill": prefill, "prompt_tokens": res.prompt_tokens, "new_tokens": res.new_tokens,
                   "answer_s": statistics.median(times), "answer_s_all": times,
                   "refreshes": res.refresh["count"] if res.refresh else 0, "timings": res.timings}
            results.append(row)
            print(f"{n:4d} {name:6s} {prefill:6s} {row['answer_s']:.2f} s ({row['refreshes']} re-selections)",
                  file=sys.stderr, flush=True)
    out = {"checkpoint": a.checkpoint, "data": a.data, "new_tokens": a.new_tokens, "refresh": a.refresh,
           "repeats": a.repeats, "rows": results,
           "machine": {"platform": platform.platform(), "processor": platform.processor(), "threads": a.threads},
           "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
           "command": "python benchmarks/segment_cost.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    path = Path(a.out)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=1) + "\n")
    tmp.replace(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
