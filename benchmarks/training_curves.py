"""Validation NLL against training tokens, across the stages of one or more runs (the `eval_every`
records of each stage's log.jsonl), as JSON + markdown + PNG.

    python benchmarks/training_curves.py --run "IFPruning keep 1/2=runs/v2/keep50-pretrain,runs/v2/keep50-sft" \
        --out results/training/v2/curves

Tokens accumulate over a run's stages in the order given (stage 2 starts where stage 1 stopped).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def read_curve(stage_dirs: list[Path]) -> list[dict]:
    points, offset = [], 0
    for d in stage_dirs:
        log = d / "log.jsonl" if d.is_dir() else d  # a stage's output_dir, or its log file
        rows = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
        steps = [r for r in rows if "loss" in r and "event" not in r]
        for r in rows:
            if r.get("event") == "validation":
                points.append({"stage": d.name if d.is_dir() else d.stem, "step": r["step"], "tokens": offset + r["tokens"], **r["val_nll"]})
        if steps:
            offset += steps[-1]["tokens"]
    return points


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--run", action="append", required=True, metavar="NAME=DIR_OR_LOG[,...]")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    curves = {}
    for spec in a.run:
        name, dirs = spec.split("=", 1)
        curves[name] = read_curve([Path(x) for x in dirs.split(",")])
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(curves, indent=1) + "\n")
    lines = []
    for name, pts in curves.items():
        fams = [k for k in (pts[0] if pts else {}) if k not in ("stage", "step", "tokens")]
        lines += [f"### {name}", "", "| stage | step | tokens | " + " | ".join(fams) + " |",
                  "|---|---|---|" + "---|" * len(fams)]
        lines += [f"| {q['stage']} | {q['step']} | {q['tokens']} | " + " | ".join(f"{q[f]:.3f}" for f in fams) + " |"
                  for q in pts]
        lines.append("")
    out.with_suffix(".md").write_text("\n".join(lines))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed (pip install -e .[eval]): wrote JSON and markdown only")
        return 0
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, pts in curves.items():
        ax.plot([q["tokens"] for q in pts], [q["all"] for q in pts], marker="o", label=name)
    ax.set_xlabel("training tokens (all stages)")
    ax.set_ylabel("validation NLL per token")
    ax.set_title("held-out SFT slice, hard top-k masks, no compensation", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)
    print(f"wrote {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
