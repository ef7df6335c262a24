"""v14 (as trained: re-selection after 32 tokens, compensated) against v10 (as shipped) and dense, pooled over
both held-out slices, per family, paired over the same examples (95% bootstrap, 2000 resamples, seed 0).
v10's and dense's rows are those of results/training/v10/compare*/ (same slices; per-example caches).

    python results/training/v14/pooled_vs_v10.py > results/training/v14/pooled_vs_v10.json
"""
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, "benchmarks")
from paired_nll import example_file  # noqa: E402


def rows(results_json, want):
    rep = json.loads(Path(results_json).read_text())
    for r in rep["results"]:
        if r["suite"] == "nll" and r["selector"] == want:
            return {x["id"]: x for x in map(json.loads, example_file(r, Path(results_json)).read_text().splitlines())}
    raise SystemExit(f"no row {want} in {results_json}")


def nll(xs):
    return sum(x["num"] for x in xs) / sum(x["den"] for x in xs)


out, per = {}, {"dense": [], "v10": [], "v14": []}
for tail in ("", "b"):
    d = rows(f"results/training/v10/compare{tail}/results.json", "dense")
    a = rows(f"results/training/v10/compare{tail}/results.json", "ifpruning+refresh32[keep75-refresh]")
    b = rows(f"results/training/v14/compare{tail}/results.json", "ifpruning+refresh32")
    for i in d:
        per["dense"].append(d[i]); per["v10"].append(a[i]); per["v14"].append(b[i])
fams = sorted({x["family"] for x in per["dense"]})
rng = np.random.default_rng(0)
for fam in ["all"] + fams:
    idx = [j for j, x in enumerate(per["dense"]) if fam == "all" or x["family"] == fam]
    sel = {k: [v[j] for j in idx] for k, v in per.items()}
    dense = nll(sel["dense"])
    diffs = []
    for _ in range(2000):
        s = rng.integers(0, len(idx), len(idx))
        diffs.append(nll([sel["v14"][j] for j in s]) - nll([sel["v10"][j] for j in s]))
    out[fam] = {"n": len(idx), "dense": dense, "v10": nll(sel["v10"]), "v14": nll(sel["v14"]),
                "v10_x_dense": nll(sel["v10"]) / dense, "v14_x_dense": nll(sel["v14"]) / dense,
                "v14_minus_v10": nll(sel["v14"]) - nll(sel["v10"]),
                "ci95": [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))]}
print(json.dumps(out, indent=1))
