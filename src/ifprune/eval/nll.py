"""`nll`: mean negative log-likelihood per response token, given the (chat-formatted) prompt.

The cheapest sensitive quality signal for small models. Without `--data`, it scores a validation
mix cut from the TRAINING splits of several families (never a test split), interleaved so that any
`--limit` stays balanced across families.
"""

from __future__ import annotations

import json
from pathlib import Path

from .base import Suite
from .data import Example, LoadReport, data_file, need, read_rows
from .statistics import summarise

VALIDATION_SOURCES = {
    "math": "gsm8k/train.jsonl",
    "code": "mbpp/mbpp.jsonl",
    "general": "instruct/alpaca/alpaca_5000.json",
    "code_instruct": "instruct/codealpaca/code_alpaca_2k.json",
}
PER_FAMILY = 100
FAMILY_TASKS = {  # what a per-task selector reads for each family of the validation mix
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


class NLLSuite(Suite):
    name = "nll"
    primary = "nll_per_token"
    higher_is_better = False

    def options(self):
        return {"data": str(self.data) if self.data else "validation-mix", "per_family": PER_FAMILY}

    def data_files(self):
        if self.data is not None:
            return [self.data]
        return [data_file(self.data_dir, rel) for rel in VALIDATION_SOURCES.values()]

    def load(self):
        if self.data is None:
            return [Example(r.pop("id"), r) for r in validation_mix(self.data_dir)]
        path = data_file(self.data.parent, self.data.name) if not self.data.exists() else self.data
        rep = LoadReport(str(path))
        self.reports.append(rep)

        def check(row):
            why = need("prompt", "response")(row)
            if why is None and not row["response"].strip():
                why = "empty response"
            return why

        return [Example(str(row.get("id", n)), {"prompt": row["prompt"], "response": row["response"],
                                                "family": str(row.get("family", "all"))})
                for n, row in read_rows(path, check, strict=self.strict, report=rep)]

    def task_for(self, ex):
        """The family's description (those of the training mixture for its families, see data_sft)."""
        from ..training.data_sft import FAMILY_TASKS as SFT_TASKS

        fam = ex.data.get("family", "all")
        return FAMILY_TASKS.get(fam) or SFT_TASKS.get(fam) or self.task

    def evaluate(self, scorer, ex):
        d = ex.data
        plan = scorer.plan_for(d["prompt"])
        ctx = scorer.encode(d["prompt"], chat=True)
        cont = scorer.lm.tokenizer(d["response"], add_special_tokens=False)["input_ids"]
        (lp, n, _), = scorer.loglikelihoods(plan, [(ctx, cont)])
        return {"family": d.get("family", "all"), "num": -lp, "den": n, "plan": plan.hash if plan else None}

    def metrics(self, rows):
        out = {self.primary: summarise([r["num"] for r in rows], [r["den"] for r in rows])}
        for fam in sorted({r["family"] for r in rows}):
            sel = [r for r in rows if r["family"] == fam]
            out[f"{self.primary}/{fam}"] = summarise([r["num"] for r in sel], [r["den"] for r in sel])
        return out
