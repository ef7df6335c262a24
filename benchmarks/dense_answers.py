"""A fidelity set: held-out prompts with the dense model's own greedy answers as the responses, for
`ifprune eval nll --data`. The NLL of a pruned model on it measures how closely it reproduces what the
dense model says (lower: closer), not how well it fits a data set's reference answers, which SFT on
that data also learns. Reads the prompts file greedy_loops.py ran on and its per-example JSONL of the
dense model (no --checkpoint).

    python benchmarks/dense_answers.py ~/.cache/ifprune/sft_unread_4000.jsonl results/quality/loops/dense.jsonl OUT.jsonl
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(prompts: str, answers: str, out: str) -> int:
    ex = [json.loads(x) for x in Path(prompts).read_text().splitlines() if x.strip()]
    rows = {}
    for line in Path(answers).read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by an interruption
        rows[r["id"]] = r
    keep = []
    for i, e in enumerate(ex):
        r = rows.get(f"{i}:{e['family']}")
        if r is None:
            raise SystemExit(f"{answers} has no answer for example {i} ({e['family']}): finish that run first")
        if r["text"].strip():
            keep.append(json.dumps({"id": f"{e['family']}-dense-{i}", "prompt": e["prompt"], "response": r["text"],
                                    "family": e["family"]}) + "\n")
    tmp = Path(out + ".tmp")
    tmp.write_text("".join(keep))
    tmp.replace(out)
    print(f"wrote {len(keep)} prompts with the dense model's answers to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:4]))
