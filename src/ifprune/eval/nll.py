"""`nll`: mean negative log-likelihood per response token, given the (chat-formatted) prompt.

The cheapest sensitive quality signal for small models. Without `--data`, it scores a validation
mix cut from the TRAINING splits of several families (never a test split), interleaved so that any
`--limit` stays balanced across families.
"""

from __future__ import annotations

from .base import Suite
from .data import Example, LoadReport, data_file, need, read_rows
from .families import PER_FAMILY, SFT_TASKS, VALIDATION_SOURCES, VALIDATION_TASKS, validation_mix
from .statistics import summarise

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
        fam = ex.data.get("family", "all")
        return VALIDATION_TASKS.get(fam) or SFT_TASKS.get(fam) or self.task

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
