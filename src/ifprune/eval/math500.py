"""`math500`: MATH-500, 4-shot (Minerva-style prompts), answer match after normalisation.

Exemplars are 4 short problems from the MATH problems outside MATH-500 (math_test_minus500), never
MATH-500 itself. Answers are compared as normalised LaTeX strings (no symbolic algebra: lm-eval's
symbolic checker needs antlr4 and math_verify, which are not installed), so equivalent but
differently written answers count as wrong: a conservative score.
"""

from __future__ import annotations

import re

from .base import Suite
from .data import Example, LoadReport, data_file, need, read_rows


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (balanced braces), or None."""
    i = text.rfind("\\boxed")
    if i < 0:
        return None
    j = text.find("{", i)
    if j < 0:
        return None
    depth = 0
    for k in range(j, len(text)):
        if text[k] == "{":
            depth += 1
        elif text[k] == "}":
            depth -= 1
            if depth == 0:
                return text[j + 1 : k]
    return None


def normalise(ans: str | None) -> str | None:
    if ans is None:
        return None
    s = ans.strip()
    s = re.sub(r"\\text\{\s*([^}]*)\}", r"\1", s)
    for a, b in (("\\left", ""), ("\\right", ""), ("\\!", ""), ("\\,", ""), ("\\;", ""), ("\\ ", ""),
                 ("dfrac", "frac"), ("tfrac", "frac"), ("^\\circ", ""), ("^{\\circ}", ""), ("\\$", ""), ("$", ""),
                 ("\\%", ""), ("%", "")):
        s = s.replace(a, b)
    s = re.sub(r"\s+", "", s).rstrip(".")
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"^0\.", ".", s) if re.fullmatch(r"0\.\d+", s) else s
    if re.fullmatch(r"-?\d+\.0+", s):
        s = s.split(".")[0]
    return s.replace(",", "") if re.fullmatch(r"-?[\d,]+", s) else s


def extract(text: str) -> str | None:
    m = re.search(r"final answer is\s*\$?(.+?)\$?\.\s*(I hope|$)", text)
    if m:
        return normalise(m.group(1))
    return normalise(last_boxed(text))


class Math500Suite(Suite):
    name = "math500"
    task = "Solve a competition mathematics problem with a worked solution in LaTeX."
    primary = "exact_match"
    generation = True
    max_new_tokens = 384
    shots = 4
    stop = ["Problem:", "I hope it is correct."]

    def data_files(self):
        return [self.data or data_file(self.data_dir, "math/math500_test.jsonl"),
                data_file(self.data_dir, "math/math_test_minus500.jsonl")]

    def options(self):
        return {**super().options(), "shots": self.shots}

    def _read(self, path, *keys):
        rep = LoadReport(str(path))
        self.reports.append(rep)
        return [row for _, row in read_rows(path, need(*keys), strict=self.strict, report=rep)]

    def load(self):
        test, pool = self.data_files()
        shots = sorted((r for r in self._read(pool, "problem", "solution") if last_boxed(r["solution"])),
                       key=lambda r: (len(r["problem"]) + len(r["solution"]), r["problem"]))[: self.shots]
        self.prefix = "".join(
            f"Problem:\n{r['problem']}\n\nSolution:\n{r['solution']}\nFinal Answer: The final answer is "
            f"${last_boxed(r['solution'])}$. I hope it is correct.\n\n" for r in shots)
        return [Example(f"math500-{i}", {"problem": r["problem"], "answer": r["answer"]})
                for i, r in enumerate(self._read(test, "problem", "answer"))]

    def evaluate(self, scorer, ex):
        prompt = f"{self.prefix}Problem:\n{ex.data['problem']}\n\nSolution:\n"
        plan = scorer.plan_for(ex.data["problem"])
        text = scorer.generate(plan, scorer.encode(prompt, chat=False), max_new_tokens=self.max_new_tokens,
                               stop=self.stop)
        pred, target = extract(text + "I hope it is correct."), normalise(ex.data["answer"])
        return {"num": float(pred is not None and pred == target), "den": 1.0, "prediction": pred, "target": target,
                "output": text}
