"""`mc`: multiple choice by log-likelihood of each choice given the context (accuracy, and
length-normalised accuracy: log-likelihood per byte of the choice, as lm-eval's acc_norm).

Tasks: MMLU (5-shot from the dev split of the question's subject, test questions interleaved
across subjects so a small limit still spans many), ARC easy/challenge, PIQA, Winogrande (partial
scoring: the fixed continuation given each filled-in context), BoolQ, OpenBookQA (the question stem
alone, no supporting fact, as lm-eval's openbookqa). HellaSwag is not in
../shared/data, so it is not offered. `--limit N` applies per task.
"""

from __future__ import annotations

from pathlib import Path

from ..core.errors import IfpruneError
from .base import Suite
from .data import Example, LoadReport, data_file, read_csv_rows, read_rows
from .statistics import summarise

ICL = {
    "arc_easy": "icl_eval/world_knowledge/arc_easy.jsonl",
    "arc_challenge": "icl_eval/world_knowledge/arc_challenge.jsonl",
    "piqa": "icl_eval/commonsense_reasoning/piqa.jsonl",
    "winogrande": "icl_eval/language_understanding/winogrande.jsonl",
    "boolq": "icl_eval/reading_comprehension/boolq.jsonl",
    "openbookqa": "icl_eval/commonsense_reasoning/openbook_qa.jsonl",
}
TASKS = ("mmlu", *ICL)
LETTERS = "ABCD"


def _check_choice(row):
    if "context_options" in row:
        ok = isinstance(row["context_options"], list) and isinstance(row.get("continuation"), str)
        n = len(row["context_options"]) if ok else 0
    else:
        ok = isinstance(row.get("query"), str) and isinstance(row.get("choices"), list)
        n = len(row["choices"]) if ok else 0
    if not ok or n < 2:
        return "need 'query' + 'choices' (or 'context_options' + 'continuation') with at least 2 options"
    if not isinstance(row.get("gold"), int) or not 0 <= row["gold"] < n:
        return f"'gold' must be an option index in 0..{n - 1}"
    return None


MC_TASKS = {  # what a per-task selector reads for each sub-task
    "mmlu": "Answer a multiple-choice question on an academic subject.",
    "arc_easy": "Answer a grade-school science multiple-choice question.",
    "arc_challenge": "Answer a hard grade-school science multiple-choice question.",
    "piqa": "Choose the more sensible way to reach an everyday physical goal.",
    "winogrande": "Decide which option a blank in a sentence refers to, using common sense.",
    "boolq": "Answer a yes/no question about a passage.",
    "openbookqa": "Answer an elementary science multiple-choice question.",
}


class MCSuite(Suite):
    name = "mc"
    task = "Answer a multiple-choice question."
    primary = "acc"

    def __init__(self, *a, tasks: list[str] | None = None, **kw):
        super().__init__(*a, **kw)
        self.tasks = list(tasks or TASKS)
        for t in self.tasks:
            if t not in TASKS:
                raise IfpruneError(f"unknown mc task {t!r}; choose from {', '.join(TASKS)}")

    def options(self):
        return {"tasks": self.tasks}

    def data_files(self) -> list[Path]:
        files = [data_file(self.data_dir, ICL[t]) for t in self.tasks if t in ICL]
        if "mmlu" in self.tasks:
            files += sorted(data_file(self.data_dir, "mmlu/test").glob("*.csv"))
        return files

    def _mmlu(self) -> list[Example]:
        test_dir, dev_dir = data_file(self.data_dir, "mmlu/test"), data_file(self.data_dir, "mmlu/dev")
        per_subject = []
        for path in sorted(test_dir.glob("*_test.csv")):
            subject = path.name[: -len("_test.csv")]
            dev = dev_dir / f"{subject}_dev.csv"
            shots = read_csv_rows(dev)[:5] if dev.exists() else []
            head = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
            prefix = head + "".join(self._mmlu_q(r) + f" {LETTERS[int(r[5])]}\n\n" for r in shots if len(r) == 6)
            rows = []
            for n, r in enumerate(read_csv_rows(path), 2):
                if len(r) != 6 or r[5].strip() not in "0123" or not r[5].strip():
                    if self.strict:
                        raise IfpruneError(f"{path}:{n}: malformed row (need question, 4 choices, answer 0-3)")
                    continue
                rows.append(Example(f"mmlu-{subject}-{n}", {
                    "task": "mmlu", "contexts": [prefix + self._mmlu_q(r)] * 4,
                    "continuations": [f" {c}" for c in LETTERS], "gold": int(r[5]), "select": r[0]}))
            per_subject.append(rows)
        out = []  # interleave subjects so a limit spans many of them
        for i in range(max((len(x) for x in per_subject), default=0)):
            out += [rows[i] for rows in per_subject if i < len(rows)]
        return out

    @staticmethod
    def _mmlu_q(r) -> str:
        return r[0].strip() + "\n" + "".join(f"{LETTERS[i]}. {r[1 + i].strip()}\n" for i in range(4)) + "Answer:"

    def _icl(self, task: str) -> list[Example]:
        path = data_file(self.data_dir, ICL[task])
        rep = LoadReport(str(path))
        self.reports.append(rep)
        out = []
        for n, r in read_rows(path, _check_choice, strict=self.strict, report=rep):
            if "context_options" in r:  # winogrande: fixed continuation, varying context
                ctxs, conts, sel = list(r["context_options"]), [" " + r["continuation"]] * len(r["context_options"]), r["context_options"][0]
            else:
                q = r["query"].rstrip()
                ctxs, conts, sel = [f"{q}\nAnswer:"] * len(r["choices"]), [f" {c}" for c in r["choices"]], q
            out.append(Example(f"{task}-{n}", {"task": task, "contexts": ctxs, "continuations": conts,
                                               "gold": r["gold"], "select": sel}))
        return out

    def load(self):
        return [ex for t in self.tasks for ex in (self._mmlu() if t == "mmlu" else self._icl(t))]

    def task_for(self, ex):
        return MC_TASKS.get(ex.data["task"], self.task)

    def take(self, examples, limit):
        if limit is None:
            return examples
        out = []
        for t in self.tasks:
            out += [ex for ex in examples if ex.data["task"] == t][:limit]
        return out

    def evaluate(self, scorer, ex):
        d = ex.data
        plan = scorer.plan_for(d["select"])
        pairs = [(scorer.encode(c, chat=False), scorer.encode(x, chat=False)) for c, x in zip(d["contexts"], d["continuations"])]
        lls = scorer.loglikelihoods(plan, pairs)
        scores = [lp for lp, _, _ in lls]
        norm = [lp / max(1, len(x.encode("utf-8"))) for (lp, _, _), x in zip(lls, d["continuations"])]
        pred, pred_norm = max(range(len(scores)), key=scores.__getitem__), max(range(len(norm)), key=norm.__getitem__)
        return {"task": d["task"], "num": float(pred == d["gold"]), "den": 1.0, "acc_norm": float(pred_norm == d["gold"]),
                "pred": pred, "gold": d["gold"]}

    def metrics(self, rows):
        out = {"acc": summarise([r["num"] for r in rows]), "acc_norm": summarise([r["acc_norm"] for r in rows])}
        for t in self.tasks:
            sel = [r for r in rows if r["task"] == t]
            if sel:
                out[f"acc/{t}"] = summarise([r["num"] for r in sel])
                out[f"acc_norm/{t}"] = summarise([r["acc_norm"] for r in sel])
        return out
