"""`humaneval`: pass@1 (greedy) on HumanEval, completions executed in the sandbox.

Classic completion format: the model continues the function signature + docstring (no chat
template), cut at the first top-level statement (Codex stop sequences).
"""

from __future__ import annotations

from .base import Suite
from .data import Example, LoadReport, data_file, need, read_rows
from .sandbox import run_python

STOP = ["\ndef ", "\nclass ", "\nif ", "\nprint(", "\n#", "\n```"]


class HumanEvalSuite(Suite):
    name = "humaneval"
    task = "Complete a Python function from its signature and docstring."
    primary = "pass@1"
    generation = True
    max_new_tokens = 256
    timeout_s = 10.0

    def data_files(self):
        return [self.data or data_file(self.data_dir, "humaneval/HumanEval.jsonl")]

    def load(self):
        path = self.data_files()[0]
        rep = LoadReport(str(path))
        self.reports.append(rep)
        rows = read_rows(path, need("task_id", "prompt", "test", "entry_point"), strict=self.strict, report=rep)
        return [Example(r["task_id"], r) for _, r in rows]

    def evaluate(self, scorer, ex):
        d = ex.data
        plan = scorer.plan_for(d["prompt"])
        completion = scorer.generate(plan, scorer.encode(d["prompt"], chat=False),
                                     max_new_tokens=self.max_new_tokens, stop=STOP)
        program = f"{d['prompt']}{completion}\n\n{d['test']}\n\ncheck({d['entry_point']})\n"
        res = run_python(program, timeout_s=self.timeout_s)
        return {"num": float(res.passed), "den": 1.0, "status": res.status, "completion": completion}
