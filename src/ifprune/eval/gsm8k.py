"""`gsm8k`: 8-shot chain of thought, exact match of the final number.

The 8 exemplars are the first 8 TRAIN problems with their worked answers (calculator annotations
removed, "#### N" rewritten as "The answer is N."), so nothing from the test split leaks into
prompts. Scored on gsm8k/test.jsonl.
"""

from __future__ import annotations

import re

from .base import Suite
from .data import Example, LoadReport, data_file, need, read_rows

_NUM = re.compile(r"-?[\d,]*\.?\d+")


def worked_answer(answer: str) -> tuple[str, str]:
    """GSM8K answer field -> (chain of thought ending in 'The answer is N.', N)."""
    body, _, final = answer.rpartition("####")
    body = re.sub(r"<<[^>]*>>", "", body).strip()
    final = final.strip().replace(",", "")
    return f"{body}\nThe answer is {final}.", final


def normalise_number(s: str) -> str:
    s = s.replace(",", "").replace("$", "").strip().rstrip(".")
    try:
        v = float(s)
    except ValueError:
        return s
    return str(int(v)) if v == int(v) else str(v)


def extract_answer(text: str) -> str | None:
    m = re.search(r"The answer is\s*\$?(-?[\d,]*\.?\d+)", text)
    if m:
        return normalise_number(m.group(1))
    nums = _NUM.findall(text)
    return normalise_number(nums[-1]) if nums else None


class GSM8KSuite(Suite):
    name = "gsm8k"
    task = "Solve a grade-school math word problem step by step and give the final number."
    primary = "exact_match"
    generation = True
    max_new_tokens = 256
    shots = 8
    stop = ["Question:", "\n\n\n"]

    def data_files(self):
        return [self.data or data_file(self.data_dir, "gsm8k/test.jsonl"), data_file(self.data_dir, "gsm8k/train.jsonl")]

    def options(self):
        return {**super().options(), "shots": self.shots}

    def _read(self, path):
        rep = LoadReport(str(path))
        self.reports.append(rep)
        return [row for _, row in read_rows(path, need("question", "answer"), strict=self.strict, report=rep)]

    def load(self):
        test, train = self.data_files()
        shots = self._read(train)[: self.shots]
        self.prefix = "".join(f"Question: {r['question']}\nAnswer: {worked_answer(r['answer'])[0]}\n\n" for r in shots)
        return [Example(f"gsm8k-{i}", {"question": r["question"], "target": worked_answer(r["answer"])[1]})
                for i, r in enumerate(self._read(test))]

    def evaluate(self, scorer, ex):
        prompt = f"{self.prefix}Question: {ex.data['question']}\nAnswer:"
        plan = scorer.plan_for(ex.data["question"])
        text = scorer.generate(plan, scorer.encode(prompt, chat=False), max_new_tokens=self.max_new_tokens, stop=self.stop)
        pred = extract_answer(text)
        target = normalise_number(ex.data["target"])
        return {"num": float(pred == target), "den": 1.0, "prediction": pred, "target": target, "output": text}
