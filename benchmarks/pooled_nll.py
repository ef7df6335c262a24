"""Per-family NLL of nll compare rows pooled over several compares on different example slices (e.g.
the two held-out slices of results/refresh/), x the pooled dense row, with 95% bootstrap intervals.
Twelve examples per family leave a family's ratio to sampling noise (code at keep 3/4 is 1.22x dense on
one slice and 0.88x on the other); pooling slices halves that spread.

    python benchmarks/pooled_nll.py results/refresh/compare75/results.json results/refresh/compare75b/results.json \
        --out results/refresh/pooled75.json

`--reference ROW` also divides every row by that one (x_reference), e.g. dense-sft: the dense model fine-tuned
on the same data and budget.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> int:
    from ifprune.eval.statistics import summarise
    from paired_nll import example_file  # benchmarks/ is the script's directory

    p = argparse.ArgumentParser()
    p.add_argument("results", nargs="+", type=Path, help="results.json of nll compares over disjoint slices")
    p.add_argument("--reference", default=None, help="a second row to divide by (x_reference), e.g. dense-sft")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    per_row: dict[str, list[dict]] = {}
    for path in a.results:
        rep = json.loads(path.read_text())
        for r in rep["results"]:
            if r["suite"] != "nll":
                continue
            rows = [json.loads(x) for x in example_file(r, path).read_text().splitlines()]
            per_row.setdefault(r["selector"], []).extend({**x, "slice": str(path)} for x in rows)
    if "dense" not in per_row:
        print("error: no dense row to divide by", file=sys.stderr)
        return 2
    keys = {(x["slice"], x["id"]) for x in per_row["dense"]}
    if len(keys) != len(per_row["dense"]):
        print("error: the same example appears twice in the dense rows: the slices overlap", file=sys.stderr)
        return 2
    if a.reference is not None and a.reference not in per_row:
        print(f"error: no row {a.reference!r} to divide by; rows: {', '.join(per_row)}", file=sys.stderr)
        return 2
    fams = sorted({x["family"] for x in per_row["dense"]})
    out = {"results": [str(x) for x in a.results], "reference": a.reference, "rows": {}}

    def pooled(name: str, fam: str) -> float:
        rows = [x for x in per_row[name] if fam == "all" or x["family"] == fam]
        return sum(x["num"] for x in rows) / sum(x["den"] for x in rows)

    for name, rows in per_row.items():
        row = {}
        for fam in ["all", *fams]:
            sel = [x for x in rows if fam == "all" or x["family"] == fam]
            m = summarise([x["num"] for x in sel], [x["den"] for x in sel])
            row[fam] = {**m, "x_dense": m["value"] / pooled("dense", fam)}
            if a.reference is not None:
                row[fam]["x_reference"] = m["value"] / pooled(a.reference, fam)
        out["rows"][name] = row
        key = "x_dense" if a.reference is None else "x_reference"
        print(f"{name:24s}", " ".join(f"{f} {v['value']:.3f} ({v[key]:.2f}x, n={v['n']})" for f, v in row.items()))
    if a.out:
        a.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
