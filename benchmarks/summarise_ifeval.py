"""Summarise `eval compare --suites ifeval` reports (benchmarks/ifeval.sh): prompt- and instruction-
level accuracy, strict and loose, per row with 95% bootstrap intervals; each pruned row's difference to
dense on the same prompts (paired 95% bootstrap interval); and what the answers look like: mean length in
tokens, how many reach the token budget, how many end in a greedy loop (benchmarks/greedy_loops.py's
test). The per-example rows are copied next to the summary, so the table can be recomputed from the
repository alone.

    python benchmarks/summarise_ifeval.py results/quality/ifeval/dense/results.json,... results/quality/ifeval "IFEval"

A fourth argument pairs rows by their folder names, comma-separated A:B (e.g. v10_task:v10): A - B on the same
prompts, with paired 95% intervals.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from greedy_loops import tail_loop  # noqa: E402
from summarise_mc import example_rows, paired_cell, read_report  # noqa: E402


def main(src: str, out_dir: str, title: str = "IFEval", pairs: str = "") -> int:
    from ifprune.core.loading import load_model
    from ifprune.eval.statistics import summarise

    tok = load_model().tokenizer
    out = Path(out_dir)
    (out / "examples").mkdir(parents=True, exist_ok=True)
    reps, per_row = [], {}
    for p in src.split(","):
        x = read_report(p, "ifeval")
        reps.append(x)
        for r in x["results"]:
            if r["suite"] != "ifeval":
                continue
            label = f"{Path(p).parent.name}: {r['selector']}"
            saved = out / "examples" / f"{Path(p).parent.name}.jsonl"
            cache = Path(r["cache_file"]) if r.get("cache_file") else saved
            rows = example_rows(cache, saved, label, "summarise_ifeval.py")
            if rows is None:
                return 2
            per_row[label] = (r, rows, saved)
    by_dir = {label.split(": ")[0]: rows for label, (_, rows, _) in per_row.items()}
    pair_rows = [pair.partition(":")[::2] for pair in filter(None, pairs.split(","))]  # [(A, B)]
    missing = [x for pair in pair_rows for x in pair if x not in by_dir]
    if missing:  # before anything is written
        print(f"summarise_ifeval.py: no row {', '.join(missing)} to pair (rows: {', '.join(by_dir)})", file=sys.stderr)
        return 2
    ids = sorted(set.intersection(*(set(rows) for _, rows, _ in per_row.values())))
    for _, rows, saved in per_row.values():
        saved.write_text("".join(json.dumps(rows[i]) + "\n" for i in ids))
    budget = {r["options"]["max_new_tokens"] for r, _, _ in per_row.values()}
    cap = max(budget)
    dense_label = next(k for k, (r, _, _) in per_row.items() if r["selector"] == "dense")
    dense = per_row[dense_label][1]

    lines = [f"# {title} ({reps[0]['model']})", "",
             "From " + "; ".join(f"`{x['command']}` (machine: {x['machine']['platform']}, {x['machine']['threads']} "
                                 f"thread(s), {x['machine']['date']})" for x in reps) + "; summarised by "
             f"`python benchmarks/summarise_ifeval.py {src} {out_dir} \"{title}\"" + (f" {pairs}" if pairs else "") + f"`. {len(ids)} prompts, the same for "
             "every row; greedy answers; lm-eval's IFEval checkers. Intervals: 95% bootstrap (2000 resamples, seed 0); "
             "differences to dense are paired over the same prompts. Tokens: mean answer length; at cap: answers "
             f"that used the whole budget ({', '.join(map(str, sorted(budget)))} tokens, within one token after "
             "re-tokenising); loops: the "
             "answer's tail repeats a 1-8 token unit >= 3 times over >= 16 tokens.", "",
             "| row | keep | prompt strict | - dense [95% CI] | prompt loose | inst strict | inst loose | tokens | at cap | loops |",
             "|" + "---|" * 10]
    for label, (r, rows, _) in sorted(per_row.items(), key=lambda kv: (-kv[1][0]["keep"], kv[0] != dense_label, kv[0])):
        m = {k: summarise([rows[i][k] for i in ids]) for k in ("prompt_strict", "prompt_loose")}
        for kind in ("strict", "loose"):
            m[f"inst_{kind}"] = summarise([sum(rows[i][f"inst_{kind}"]) for i in ids],
                                          [len(rows[i][f"inst_{kind}"]) for i in ids])
        lens = [tok(rows[i]["response"], add_special_tokens=False)["input_ids"] for i in ids]
        cells = [label, f"{r['keep']:.2f}"]
        for k in ("prompt_strict", "prompt_loose", "inst_strict", "inst_loose"):
            lo, hi = m[k]["ci95"]
            cells.append(f"{100 * m[k]['value']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]")
            if k == "prompt_strict":
                if label == dense_label:
                    cells.append("")
                else:
                    cells.append(paired_cell([rows[i]["prompt_strict"] - dense[i]["prompt_strict"] for i in ids]))
        cells += [f"{sum(map(len, lens)) / len(lens):.0f}",
                  str(sum(len(x) >= cap - 1 for x in lens)),
                  str(sum(tail_loop(x) is not None for x in lens))]
        lines.append("| " + " | ".join(cells) + " |")
    if pair_rows:
        lines += ["", "Paired differences (same prompts; A - B, points, 95% interval):", "",
                  "| A - B | prompt strict | prompt loose |", "|---|---|---|"]
        for a, b in pair_rows:
            lines.append(f"| {a} - {b} | " + " | ".join(
                paired_cell([by_dir[a][i][k] - by_dir[b][i][k] for i in ids]) for k in ("prompt_strict", "prompt_loose"))
                + " |")
    data = Path(os.environ.get("IFPRUNE_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    data = data / "ifeval" / "input_data.jsonl"
    if data.is_file():  # instructions followed (strict) per instruction group: where the rows differ
        insts = {f"ifeval-{r['key']}": r["instruction_id_list"] for r in map(json.loads, data.read_text().splitlines())}
        groups = sorted({i.split(":")[0] for k in ids for i in insts[k]})
        total = {g: sum(i.split(":")[0] == g for k in ids for i in insts[k]) for g in groups}
        lines += ["", "Instructions followed (strict) per instruction group:", "",
                  "| row | " + " | ".join(f"{g} ({total[g]})" for g in groups) + " |", "|" + "---|" * (1 + len(groups))]
        for label, (_, rows, _) in per_row.items():
            got = {g: sum(ok for k in ids for i, ok in zip(insts[k], rows[k]["inst_strict"]) if i.split(":")[0] == g)
                   for g in groups}
            lines.append(f"| {label} | " + " | ".join(str(got[g]) for g in groups) + " |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:5]))
