"""What the llama.cpp runtime's quantised weights cost in quality: held-out NLL per family, the same plan in
float32 (torch) and in llama.cpp at Q8_0 and Q4_1, paired per example.

Examples: the SFT mix's validation slices (24 per family, never trained on), reference answers teacher-forced
after the chat-templated prompt; NLL per answer token. Rows: the dense model (base weights); GRIFFIN keep 1/2
(base weights, one plan per prompt, no compensation); the shipped predictor at keep 3/4 on its tuned weights
(one plan per prompt, no re-selection). Every pruned row runs the whole sequence through the compact model
(a pruned prefill), so float32 and quantised rows score the same computation. Differences: quantised minus
float32 of the same plan, with 95% bootstrap intervals over examples.

    python benchmarks/llamacpp_quality.py --threads 1 --out results/speed
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import numpy as np
import torch

from ifprune.core.loading import load_model
from ifprune.core.paths import write_json, write_text
from ifprune.core.prompting import encode_prompt, response_ids
from ifprune.eval.families import SFT_TASKS
from ifprune.eval.statistics import summarise
from ifprune.runtime.llamacpp import LlamaCppCompact
from ifprune.selection.selectors import make_selector
from ifprune.training.config import default_data_dir
from ifprune.training.data_sft import sft_splits


def torch_logprobs(model, ids: list[int]) -> np.ndarray:
    with torch.inference_mode():
        logits = model(torch.tensor([ids])).logits[0, :-1].double()
    lp = torch.log_softmax(logits, -1)
    return lp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].numpy()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--per-family", type=int, default=24)
    ap.add_argument("--weights", nargs="+", default=["q8_0", "q4_1"])
    ap.add_argument("--out", default="results/speed")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    _, val = sft_splits(default_data_dir(), list(SFT_TASKS), max_per_family=1, val_per_family=args.per_family)
    base = load_model(None)
    tuned = load_model(None)
    from ifprune.artifacts import default_selection

    name, ckpt = default_selection(None, "float32")
    predictor = make_selector(name, checkpoint=ckpt)
    predictor.artifact.attach(tuned)
    griffin = make_selector("griffin")
    rows = [("dense", base, None, base.d_ffn), ("griffin keep 1/2", base, griffin, base.d_ffn // 2),
            ("predictor keep 3/4 (tuned)", tuned, predictor, int(predictor.artifact.config["width"]))]
    engines = {(r[0], wt): LlamaCppCompact(r[1], r[3], weights=wt, threads=args.threads, n_ctx=1024)
               for r in rows for wt in args.weights}
    per: dict = {}
    for i, ex in enumerate(val):
        p = encode_prompt(base.tokenizer, ex.prompt)[0].tolist()
        ids = (p + response_ids(base.tokenizer, ex.prompt, ex.response).tolist())[:1024]
        n_resp = len(ids) - len(p)
        if n_resp < 1:
            continue
        for row, lm, sel, width in rows:
            plan = sel.select(lm, ex.prompt, width) if sel is not None else None
            if plan is None:
                model = lm.model
            else:
                c = lm.compact(width)
                c.load(plan)
                model = c.model
            results = {"float32": torch_logprobs(model, ids)}
            for wt in args.weights:
                eng = engines[(row, wt)]
                if plan is not None:
                    eng.load(plan)
                results[wt] = eng.engine.logprobs(ids)
            for k, lp in results.items():
                per.setdefault((row, k), []).append({"family": ex.family, "nll": float(-lp[-n_resp:].sum()),
                                                     "tokens": n_resp})
        if (i + 1) % 24 == 0:
            print(f"{i + 1}/{len(val)} examples", file=sys.stderr)
    res = {"command": "python benchmarks/llamacpp_quality.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "threads": args.threads,
           "examples": len(per[("dense", "float32")]), "rows": []}
    fams = ["all"] + list(SFT_TASKS)
    for (row, wt), xs in per.items():
        out = {"row": row, "weights": wt, "families": {}}
        ref = per[(row, "float32")]
        for fam in fams:
            pick = [j for j, x in enumerate(xs) if fam == "all" or x["family"] == fam]
            num = [xs[j]["nll"] for j in pick]
            den = [xs[j]["tokens"] for j in pick]
            out["families"][fam] = summarise(num, den)
            if wt != "float32":
                out["families"][fam]["minus_float32"] = summarise([xs[j]["nll"] - ref[j]["nll"] for j in pick], den)
        res["rows"].append(out)
    write_json(Path(args.out) / "quality.json", res)
    lines = ["# Quality of the llama.cpp runtime's weights (held-out NLL per answer token)\n",
             f"{res['date']}, {res['examples']} validation examples (24 per family), {args.threads} thread(s). "
             f"Command: `{res['command']}`\n", "| row | weights | " + " | ".join(fams) + " |",
             "|---|---|" + "---|" * len(fams)]
    for r in res["rows"]:
        cells = []
        for fam in fams:
            f = r["families"][fam]
            d = f.get("minus_float32")
            cells.append(f"{f['value']:.3f}" + (f" ({d['value']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}])"
                                                if d else ""))
        lines.append(f"| {r['row']} | {r['weights']} | " + " | ".join(cells) + " |")
    write_text(Path(args.out) / "quality.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
