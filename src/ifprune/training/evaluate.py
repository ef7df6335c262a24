"""Validation NLL per task family under a selection method, and mask overlap within/across families.

The NLL is eval's scorer's (eval.scorer.Scorer: the compact model of each plan, as `ifprune eval nll` runs it), so
a training report and an eval run of the same plan give the same number.
"""

from __future__ import annotations

import itertools

import torch

from ..eval.families import SFT_TASKS
from .data_sft import SFTExample, tokenize_sft


def family_nll(lm, examples: list[SFTExample], plan_for, *, max_seq_len: int,
               max_prompt_tokens: int) -> dict[str, float]:
    """Mean response-token NLL per family (and "all"), each example tokenised as training reads it.
    `plan_for(example)` -> Plan, or None for the full model."""
    from ..eval.scorer import Scorer
    from ..selection.selectors import make_selector

    scorer = Scorer(lm, make_selector("dense"), lm.d_ffn)  # (plans come from plan_for, not from its selector)
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for e in examples:
        t = tokenize_sft(lm.tokenizer, e, max_seq_len=max_seq_len, max_prompt_tokens=max_prompt_tokens)
        ids, start = t.input_ids.tolist(), int((t.labels == -100).sum())
        (lp, n, _), = scorer.loglikelihoods(plan_for(e), [(ids[:start], ids[start:])])
        sums[e.family] = sums.get(e.family, 0.0) - lp
        counts[e.family] = counts.get(e.family, 0) + n
    out = {f: sums[f] / max(counts[f], 1) for f in sorted(sums)}
    out["all"] = sum(sums.values()) / max(sum(counts.values()), 1)
    return out


def overlap_by_family(plans: list, families: list[str]) -> dict:
    """Mean pairwise overlap of kept channels: within each family, and across families."""
    masks = torch.stack([p.to_mask() for p in plans])  # [N, L, d]
    k = plans[0].width
    within, across = {}, []
    per_fam: dict[str, list[float]] = {}
    for i, j in itertools.combinations(range(len(plans)), 2):
        ov = float((masks[i] * masks[j]).sum(1).mean() / k)
        if families[i] == families[j]:
            per_fam.setdefault(families[i], []).append(ov)
        else:
            across.append(ov)
    for f, v in per_fam.items():
        within[f] = sum(v) / len(v)
    return {"within": within, "within_mean": sum(within.values()) / max(len(within), 1),
            "across_mean": sum(across) / max(len(across), 1), "random_expectation": k / plans[0].d_ffn}


def task_text(family: str) -> str:
    return SFT_TASKS[family]
