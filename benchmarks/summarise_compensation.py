"""Summarise `eval compare --compensations none calibration` results: per selector and keep, NLL
plain vs compensated, overall and per family, the share of the gap to dense that compensation closes,
and whether it is better on every family.

    python benchmarks/summarise_compensation.py results/compensation/compare/results.json results/compensation/summary.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(src: str, out: str) -> int:
    rep = json.loads(Path(src).read_text())
    rows = [r for r in rep["results"] if r["suite"] == "nll"]
    dense = next(r for r in rows if r["selector"] == "dense")
    fams = sorted(k.split("/", 1)[1] for k in dense["metrics"] if "/" in k)

    def val(r, fam=None):
        key = "nll_per_token" + (f"/{fam}" if fam else "")
        return r["metrics"][key]["value"]

    by = {(r["selector"], r["width"]): r for r in rows}
    lines = [f"# Output compensation: validation NLL, plain vs compensated ({rep['model']})", "",
             f"From `{src}` (command: `{rep['command']}`; machine: {rep['machine']['platform']}, "
             f"{rep['machine']['threads']} threads, {rep['machine']['date']}). NLL per response token on "
             f"{dense['examples']} held-out examples; dense {val(dense):.3f}. Gap closed = (plain - compensated) / "
             "(plain - dense). Cells: plain -> compensated.", "",
             "| selector | keep | plain | compensated | gap closed | better on every family | " + " | ".join(fams) + " |",
             "|" + "---|" * (6 + len(fams))]
    for (sel, width), r in by.items():
        if "+" in sel or sel == "dense":
            continue
        comp = by.get((f"{sel}+calibration", width))
        if comp is None:
            continue
        p, c, d = val(r), val(comp), val(dense)
        every = all(val(comp, f) < val(r, f) for f in fams)
        cells = [sel, f"{r['keep']:.3f}", f"{p:.3f}", f"{c:.3f}", f"{(p - c) / (p - d):.0%}", "yes" if every else "no"]
        cells += [f"{val(r, f):.2f} -> {val(comp, f):.2f}" for f in fams]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Dense per family: " + ", ".join(f"{f} {val(dense, f):.3f}" for f in fams)]
    Path(out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:3]))
