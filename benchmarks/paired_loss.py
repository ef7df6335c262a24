"""Paired training loss of two runs that read the same batches (an A/B's arms): per window of steps, the
mean of A's per-step loss over the mean of B's, and each arm's in-loop validation NLL. Both arms see
the same examples at every step, so the ratio is free of the batch-to-batch noise that a comparison
of either curve alone carries.

    python benchmarks/paired_loss.py results/training/v9/logs/keep50-full.jsonl \
        results/training/v9/logs/keep50-lora.jsonl --window 100 --out results/training/v9/paired_loss.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def read_log(path: Path) -> tuple[dict[int, float], list[dict]]:
    steps, vals = {}, []
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if r.get("event") == "validation":
            vals.append({"step": r["step"], "tokens": r["tokens"], "val_nll": r["val_nll"]})
        elif "loss" in r and "event" not in r:
            steps[r["step"]] = r["loss"]
    return steps, vals


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("a", type=Path, help="arm A's per-step log (log.jsonl)")
    p.add_argument("b", type=Path, help="arm B's per-step log, the same batches")
    p.add_argument("--window", type=int, default=100, help="steps per row")
    p.add_argument("--out", type=Path, default=None, help="write the JSON here too")
    a = p.parse_args()
    la, va = read_log(a.a)
    lb, vb = read_log(a.b)
    shared = sorted(set(la) & set(lb))
    if not shared:
        print(f"error: {a.a} and {a.b} share no logged step", file=sys.stderr)
        return 2
    rows = []
    for i in range(0, len(shared), a.window):
        s = shared[i:i + a.window]
        rows.append({"steps": [s[0], s[-1]], "mean_loss_a": sum(la[k] for k in s) / len(s),
                     "mean_loss_b": sum(lb[k] for k in s) / len(s),
                     "ratio_a_over_b": sum(la[k] for k in s) / sum(lb[k] for k in s)})
    res = {"a": str(a.a), "b": str(a.b), "window": a.window, "paired": rows,
           "validation_a": va, "validation_b": vb}
    for r in rows:
        print(f"steps {r['steps'][0]}-{r['steps'][1]}: A {r['mean_loss_a']:.4f}  B {r['mean_loss_b']:.4f}  "
              f"A/B {r['ratio_a_over_b']:.3f}")
    for name, v in (("A", va), ("B", vb)):
        print(name, "validation", [(x["step"], round(x["val_nll"]["all"], 4)) for x in v])
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
