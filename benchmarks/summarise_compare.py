"""Summarise an `eval compare --suites nll` report: validation NLL per family for every row, its ratio
to dense (the bars: keep 1/2 <= 1.10x dense on every family, keep 3/4 <= 1.03x), and the best row per
family at each keep.

    python benchmarks/summarise_compare.py results/training/v3/compare/results.json results/training/v3/summary.md "v3 training"

SRC may name several reports joined by commas (e.g. a run without compensation and one of GRIFFIN with
it, on the same data): their rows are listed together; the first report's dense row is the reference.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(src: str, out: str, title: str = "v2 training") -> int:
    reps = [json.loads(Path(p).read_text()) for p in src.split(",")]
    rep = reps[0]
    if len({tuple(sorted({r["data_hash"] for r in x["results"]})) for x in reps}) > 1:
        raise SystemExit("the reports were computed on different data: their rows cannot share a table")
    seen, rows = set(), []
    for x in reps:
        for r in x["results"]:
            mode = ((r.get("options") or {}).get("compensation") or {}).get("mode", "none")
            if mode != "none" and "+" not in r["selector"]:  # a single-mode report names the mode in its header only
                r = {**r, "selector": f"{r['selector']}+{mode}"}
            key = (r["selector"], r["keep"])
            if r["suite"] == "nll" and key not in seen:
                seen.add(key)
                rows.append(r)
    dense = next(r for r in rows if r["selector"] == "dense")
    fams = sorted(k.split("/", 1)[1] for k in dense["metrics"] if "/" in k)

    def val(r, fam=None):
        return r["metrics"]["nll_per_token" + (f"/{fam}" if fam else "")]["value"]

    def ci(r):
        lo, hi = r["metrics"]["nll_per_token"]["ci95"]
        return f"[{lo:.3f}, {hi:.3f}]"

    lines = [f"# {title}: validation NLL ({rep['model']})", "",
             f"From `{src}` (command{'s' if len(reps) > 1 else ''}: " + "; ".join(f"`{x['command']}`" for x in reps) + "; machine:"
             f" {rep['machine']['platform']}, "
             f"{rep['machine']['threads']} threads, {rep['machine']['date']}). NLL per response token on "
             f"{dense['examples']} held-out examples ({dense['examples'] // len(fams)} per family); cells: NLL (x dense).", "",
             "| row | keep | all | 95% CI | worst family x dense | " + " | ".join(fams) + " |",
             "|" + "---|" * (5 + len(fams))]
    rows.sort(key=lambda r: -r["keep"])  # stable: the report's order within a keep
    for r in rows:
        worst = max(val(r, f) / val(dense, f) for f in fams)
        cells = [r["selector"], f"{r['keep']:.2f}", f"{val(r):.3f} ({val(r) / val(dense):.2f}x)", ci(r), f"{worst:.2f}x"]
        cells += [f"{val(r, f):.3f} ({val(r, f) / val(dense, f):.2f}x)" for f in fams]
        lines.append("| " + " | ".join(cells) + " |")
    for keep in sorted({r["keep"] for r in rows if r["selector"] != "dense"}):
        pruned = [r for r in rows if r["selector"] != "dense" and r["keep"] == keep]
        lines += ["", f"Best row per family at keep {keep:.2f}: " + ", ".join(
            f"{f} {min(pruned, key=lambda r: val(r, f))['selector']}" for f in fams)]
    Path(out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:4]))
