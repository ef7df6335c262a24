"""`mbpp`: pass@1 (greedy) on the MBPP test split (task_id 11-510), 3-shot with tasks 2-4 in the
original paper's prompt format, code executed in the sandbox against the task's asserts."""

from __future__ import annotations

from .base import Suite
from .data import Example, LoadReport, data_file, read_rows
from .sandbox import run_python

SHOT_IDS = (2, 3, 4)
TEST_IDS = range(11, 511)


def _check(row):
    if not isinstance(row.get("task_id"), int):
        return "missing integer field 'task_id'"
    if not isinstance(row.get("text"), str) or not isinstance(row.get("code"), str):
        return "missing string fields 'text'/'code'"
    if not isinstance(row.get("test_list"), list) or not row["test_list"]:
        return "missing list field 'test_list'"
    return None


def prompt_for(row: dict) -> str:
    tests = "\n".join(row["test_list"])
    return f"You are an expert Python programmer, and here is your task: {row['text']} Your code should pass these tests:\n\n{tests}\n"


class MBPPSuite(Suite):
    name = "mbpp"
    task = "Write a Python function that solves the described programming problem and passes the tests."
    primary = "pass@1"
    generation = True
    max_new_tokens = 256
    timeout_s = 10.0

    def data_files(self):
        return [self.data or data_file(self.data_dir, "mbpp/mbpp.jsonl")]

    def load(self):
        path = self.data_files()[0]
        rep = LoadReport(str(path))
        self.reports.append(rep)
        rows = {r["task_id"]: r for _, r in read_rows(path, _check, strict=self.strict, report=rep)}
        self.prefix = "".join(f"{prompt_for(rows[i])}[BEGIN]\n{rows[i]['code'].replace(chr(13), '')}\n[DONE]\n\n"
                              for i in SHOT_IDS if i in rows)
        ids = [i for i in rows if i not in SHOT_IDS] if self.data is not None else [i for i in TEST_IDS if i in rows]
        return [Example(f"mbpp-{i}", rows[i]) for i in ids]

    def evaluate(self, scorer, ex):
        d = ex.data
        plan = scorer.plan_for(d["text"])
        code = scorer.generate(plan, scorer.encode(f"{self.prefix}{prompt_for(d)}[BEGIN]\n", chat=False),
                               max_new_tokens=self.max_new_tokens, stop=["[DONE]", "[BEGIN]", "\nYou are an expert"])
        program = "\n".join([code, d.get("test_setup_code", "") or "", *d["test_list"]]) + "\n"
        res = run_python(program, timeout_s=self.timeout_s)
        return {"num": float(res.passed), "den": 1.0, "status": res.status, "completion": code}
