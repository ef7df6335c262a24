"""Summarise results/training/v2/compare: validation NLL per family for every row, its ratio to dense
(the issue's bar: keep 1/2 <= 1.10x dense on every family), and which row is best per family.

    python results/training/v2/summarise.py results/training/v2/compare/results.json results/training/v2/summary.md
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
        return r["metrics"]["nll_per_token" + (f"/{fam}" if fam else "")]["value"]

    def ci(r):
        lo, hi = r["metrics"]["nll_per_token"]["ci95"]
        return f"[{lo:.3f}, {hi:.3f}]"

    lines = [f"# v2 training: validation NLL at keep 1/2 ({rep['model']})", "",
             f"From `{src}` (command: `{rep['command']}`; machine: {rep['machine']['platform']}, "
             f"{rep['machine']['threads']} threads, {rep['machine']['date']}). NLL per response token on "
             f"{dense['examples']} held-out examples (12 per family); cells: NLL (x dense).", "",
             "| row | all | 95% CI | worst family x dense | " + " | ".join(fams) + " |",
             "|" + "---|" * (4 + len(fams))]
    for r in rows:
        worst = max(val(r, f) / val(dense, f) for f in fams)
        cells = [r["selector"], f"{val(r):.3f} ({val(r) / val(dense):.2f}x)", ci(r), f"{worst:.2f}x"]
        cells += [f"{val(r, f):.3f} ({val(r, f) / val(dense, f):.2f}x)" for f in fams]
        lines.append("| " + " | ".join(cells) + " |")
    pruned = [r for r in rows if r["selector"] != "dense"]
    lines += ["", "Best pruned row per family: " + ", ".join(
        f"{f} {min(pruned, key=lambda r: val(r, f))['selector']}" for f in fams)]
    Path(out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:3]))
