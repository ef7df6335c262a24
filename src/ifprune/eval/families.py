"""The task families and their held-out slices, owned in one place: the SFT mixture's families
(read by training.data_sft) and the `eval nll` validation mix cut from training splits (read by
eval.nll), with the prompts that training must never see.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..core.errors import IfpruneError
from .data import data_file

# The SFT training mixture's families (training.data_sft): what per-task selection reads for each.
SFT_TASKS = {
    "gsm8k": "Solve a grade-school math word problem step by step and give the final number.",
    "math": "Solve a competition mathematics problem with a worked solution in LaTeX.",
    "mbpp": "Write a Python function that solves the described programming problem and passes the tests.",
    "code": "Write or explain code for a programming instruction.",
    "general": "Follow a general user instruction: answer, rewrite, classify or write text.",
    "t0": "Answer a natural-language task about a given passage: question answering, classification or summary.",
}

VALIDATION_SOURCES = {
    "math": "gsm8k/train.jsonl",
    "code": "mbpp/mbpp.jsonl",
    "general": "instruct/alpaca/alpaca_5000.json",
    "code_instruct": "instruct/codealpaca/code_alpaca_2k.json",
}
PER_FAMILY = 100
VALIDATION_TASKS = {  # what a per-task selector reads for each family of the validation mix
    "math": "Solve a grade-school math word problem step by step and give the final number.",
    "code": "Write a Python function that solves the described programming problem and passes the tests.",
    "general": "Follow a general user instruction: answer, rewrite, classify or write text.",
    "code_instruct": "Write or explain code for a programming instruction.",
}


def _instruction(row: dict) -> str:
    return row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")


def validation_mix(data_dir: Path, per_family: int = PER_FAMILY) -> list[dict]:
    """gsm8k train tail, MBPP validation (task_id 511-600), Alpaca tail, Code Alpaca tail."""
    fam: dict[str, list[dict]] = {}
    gsm = [json.loads(x) for x in data_file(data_dir, VALIDATION_SOURCES["math"]).read_text().splitlines() if x.strip()]
    fam["math"] = [{"prompt": r["question"], "response": r["answer"]} for r in gsm[-per_family:]]
    mbpp = [json.loads(x) for x in data_file(data_dir, VALIDATION_SOURCES["code"]).read_text().splitlines() if x.strip()]
    fam["code"] = [{"prompt": f"{r['text']}\nYour code should pass these tests:\n" + "\n".join(r["test_list"]),
                    "response": r["code"].replace("\r\n", "\n")}
                   for r in mbpp if 511 <= r["task_id"] <= 600][:per_family]
    for name in ("general", "code_instruct"):
        rows = json.loads(data_file(data_dir, VALIDATION_SOURCES[name]).read_text())
        fam[name] = [{"prompt": _instruction(r), "response": r["output"]} for r in rows[-per_family:]
                     if r.get("output", "").strip()]
    mixed = []
    for i in range(max(len(v) for v in fam.values())):
        for name, rows in fam.items():
            if i < len(rows):
                mixed.append({**rows[i], "family": name, "id": f"{name}-{i}"})
    return mixed


def reserved_prompts(root: Path) -> set[str]:
    """Prompts of the eval nll suite's validation mix (empty if its files are absent)."""
    try:
        return {r["prompt"] for r in validation_mix(root)}
    except (IfpruneError, OSError, ValueError, KeyError):
        return set()
