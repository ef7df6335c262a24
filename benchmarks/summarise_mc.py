"""Summarise `eval compare --suites mc` reports: accuracy per task for every row, and each pruned row's
difference to dense on the same examples with a paired 95% bootstrap interval (the bar: keep 3/4
within 2 points of dense on the average). The per-example rows are copied next to the summary, so the
table can be recomputed from the repository alone.

    python benchmarks/summarise_mc.py results/quality/mc-keep75/dense/results.json,... results/quality/mc-keep75 "MC at keep 3/4"

A fourth argument names reference rows, comma-separated (e.g. learned-static,dense-sft): every other row but dense
is also paired against each.

Under the main table: the majority class (each task's most frequent gold answer on these examples; no model), and
every row on the tasks where dense is at least INFORMATIVE_MARGIN above it: at 135M several tasks sit at chance,
where a row's answer bias moves accuracy as much as skill.
"""

from __future__ import annotations

import json
import random
import re
import sys
from collections import Counter
from pathlib import Path

INFORMATIVE_MARGIN = 0.05  # dense accuracy minus the majority-class rate for a task to count as informative


def _label(r: dict) -> str:
    mode = ((r.get("options") or {}).get("compensation") or {}).get("mode", "none")
    name = r["selector"] if mode == "none" or "+" in r["selector"] else f"{r['selector']}+{mode}"
    if not r["selector"].startswith("dense") and r["width"] == r["d_ffn"]:
        name += " (every channel: tuned weights only)"
    return name


def _file(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", label).strip("_") + ".jsonl"


def _rows(path: str) -> dict[str, dict]:
    out = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line of an interrupted run
            out[row["id"]] = row
    return out


def paired_ci(diffs: list[float], resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = random.Random(seed)
    n = len(diffs)
    means = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    return means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]


def paired_cell(diffs: list[float]) -> str:
    """A table cell: mean difference in points with its paired 95% interval."""
    lo, hi = paired_ci(diffs)
    return f"{100 * sum(diffs) / len(diffs):+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def read_report(path: str, suite: str) -> dict:
    """An `eval compare` report, or one `ifprune eval SUITE --json` result (a row of results/quality/SUITE.sh)
    wrapped as one."""
    x = json.loads(Path(path).read_text())
    if "results" not in x:
        x = {"results": [x], "command": f"ifprune eval {suite} ({Path(path).parent.name} row of results/quality/{suite}.sh)",
             "machine": x["machine"], "model": x["model"]}
    return x


def example_rows(cache: Path, copy: Path, label: str, script: str) -> dict[str, dict] | None:
    """A row's per-example results from the eval cache, else from the copy an earlier summary committed (the cache
    is per machine); None, having said which files to restore, when neither is there."""
    path = cache if cache.is_file() else copy
    if not path.is_file():
        print(f"{script}: the per-example results of row {label!r} are neither at {cache} (the eval cache) nor at "
              f"{copy}: copy the committed examples/{copy.name} of an earlier summary there", file=sys.stderr)
        return None
    return _rows(str(path))


def main(src: str, out_dir: str, title: str = "multiple choice", versus: str | None = None) -> int:
    reps = [read_report(p, "mc") for p in src.split(",")]
    results = [r for x in reps for r in x["results"] if r["suite"] == "mc"]
    out = Path(out_dir)
    (out / "examples").mkdir(parents=True, exist_ok=True)
    per_row = {}
    for r in results:
        rows = example_rows(Path(r["cache_file"]), out / "examples" / _file(_label(r)), _label(r), "summarise_mc")
        if rows is None:
            return 2
        per_row[_label(r)] = (r, rows)
    for ref_label in versus.split(",") if versus else []:
        if ref_label not in per_row:  # before anything is written
            print(f"summarise_mc: no row {ref_label!r} to pair against; rows: {', '.join(per_row)}", file=sys.stderr)
            return 2
    ids = set.intersection(*(set(rows) for _, rows in per_row.values()))
    for label, (_, rows) in per_row.items():
        lines = [json.dumps(rows[i]) for i in sorted(ids)]
        (out / "examples" / _file(label)).write_text("\n".join(lines) + "\n")
    tasks = sorted({per_row["dense"][1][i]["task"] for i in ids})
    dense = per_row["dense"][1]

    def acc(rows, task=None, key="num"):
        sel = [rows[i][key] for i in ids if task is None or rows[i]["task"] == task]
        return sum(sel) / len(sel)

    lines = [f"# {title} ({reps[0]['model']})", "",
             "From " + "; ".join(f"`{x['command']}` (machine: {x['machine']['platform']}, {x['machine']['threads']} "
                                 f"thread(s), {x['machine']['date']})" for x in reps) + "; summarised by "
             f"`python benchmarks/summarise_mc.py {src} {out_dir} \"{title}\"" + (f" {versus}" if versus else "") + f"`. {len(ids)} examples, the same for every row "
             f"({len(ids) // len(tasks)} per task); accuracy by log-likelihood of each choice (acc; acc_norm per byte). "
             "Difference to dense: mean over the same examples, paired 95% bootstrap interval (2000 resamples, seed 0).", "",
             "| row | keep | acc | acc - dense [95% CI] | acc_norm | acc_norm - dense [95% CI] | " + " | ".join(tasks) + " |",
             "|" + "---|" * (6 + len(tasks))]
    for label, (r, rows) in sorted(per_row.items(), key=lambda kv: -kv[1][0]["keep"]):
        cells = [label, f"{r['keep']:.2f}"]
        for key in ("num", "acc_norm"):
            a = acc(rows, key=key)
            cells.append(f"{100 * a:.1f}")
            if label == "dense":
                cells.append("")
            else:
                cells.append(paired_cell([rows[i][key] - dense[i][key] for i in sorted(ids)]))
        cells += [f"{100 * acc(rows, t):.1f}" for t in tasks]
        lines.append("| " + " | ".join(cells) + " |")
    # the prior alone: always the most frequent gold answer of these examples, per task
    n_task = {t: sum(dense[i]["task"] == t for i in ids) for t in tasks}
    major = {t: Counter(dense[i]["gold"] for i in ids if dense[i]["task"] == t).most_common(1)[0][1] / n_task[t]
             for t in tasks}
    mean_major = sum(major[t] * n_task[t] for t in tasks) / len(ids)
    lines.append(f"| majority class (no model: each task's most frequent answer here) | | {100 * mean_major:.1f} | | "
                 f"{100 * mean_major:.1f} | | " + " | ".join(f"{100 * major[t]:.1f}" for t in tasks) + " |")
    # tasks where the dense model is clearly above that prior; on the others a row's shift of answer bias
    # (e.g. more "yes" on BoolQ) moves accuracy as much as skill does
    informative = [t for t in tasks if acc(dense, t) - major[t] >= INFORMATIVE_MARGIN]
    if informative and len(informative) < len(tasks):
        sub = sorted(i for i in ids if dense[i]["task"] in informative)
        refs = versus.split(",") if versus else []
        lines += ["", f"On the tasks where dense is at least {100 * INFORMATIVE_MARGIN:.0f} points above the majority "
                  f"class ({', '.join(informative)}; {len(sub)} examples; chosen from dense and the gold answers only): "
                  "acc, paired differences [95% CI]:", "",
                  "| row | acc | - dense | " + " | ".join(f"- {v}" for v in refs) + " |", "|" + "---|" * (3 + len(refs))]
        for label, (r, rows) in sorted(per_row.items(), key=lambda kv: -kv[1][0]["keep"]):
            cells = [label, f"{100 * sum(rows[i]['num'] for i in sub) / len(sub):.1f}"]
            for ref in ["dense"] + refs:
                cells.append("" if ref == label else paired_cell([rows[i]["num"] - per_row[ref][1][i]["num"] for i in sub]))
            lines.append("| " + " | ".join(cells) + " |")
        sub_major = sum(major[t] * n_task[t] for t in informative) / len(sub)
        lines.append(f"| majority class | {100 * sub_major:.1f} | " + " | " * len(refs) + " |")
    for ref_label in versus.split(",") if versus else []:
        ref = per_row[ref_label][1]
        lines += ["", f"Paired against {ref_label} (same examples; negative: the row is below it):", "",
                  f"| row | acc - {ref_label} [95% CI] | acc_norm - {ref_label} [95% CI] |", "|---|---|---|"]
        for label, (r, rows) in per_row.items():
            if label not in ("dense", ref_label):
                lines.append(f"| {label} | " + " | ".join(
                    paired_cell([rows[i][key] - ref[i][key] for i in sorted(ids)]) for key in ("num", "acc_norm")) + " |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:5]))
