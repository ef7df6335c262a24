"""Validation NLL per task family under a selection method, and mask overlap within/across families.

Masks are hard 0/1 plans applied through MaskedFFN, which computes exactly what the compact model
computes (the dropped channels contribute zero), so NLL here is the pruned model's NLL.
"""

from __future__ import annotations

import itertools

import torch

from ..core.hooks import MaskedFFN
from ..eval.families import SFT_TASKS
from .data_sft import SFTExample, tokenize_sft
from .loop import _pad, token_losses


def family_nll(lm, examples: list[SFTExample], plan_for, *, max_seq_len: int, max_prompt_tokens: int,
               batch_size: int = 4) -> dict[str, float]:
    """Mean response-token NLL per family. `plan_for(example)` -> Plan, or None for the dense model."""
    masked = MaskedFFN(lm.layout)
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    pad = lm.tokenizer.pad_token_id or 0
    try:
        for i in range(0, len(examples), batch_size):
            chunk = examples[i: i + batch_size]
            toks = [tokenize_sft(lm.tokenizer, e, max_seq_len=max_seq_len, max_prompt_tokens=max_prompt_tokens)
                    for e in chunk]
            plans = [plan_for(e) for e in chunk]
            ids = _pad([t.input_ids for t in toks], pad).to(lm.device)
            att = _pad([torch.ones_like(t.input_ids) for t in toks], 0).to(lm.device)
            labels = _pad([t.labels for t in toks], -100).to(lm.device)
            with torch.no_grad():
                if plans[0] is None:
                    logits = lm.model(input_ids=ids, attention_mask=att).logits
                else:
                    masks = torch.stack([p.to_mask(device=lm.device) for p in plans])
                    with masked.apply(masks):
                        logits = lm.model(input_ids=ids, attention_mask=att).logits
            s, c = token_losses(logits, labels)
            for e, si, ci in zip(chunk, s.tolist(), c.tolist()):
                sums[e.family] = sums.get(e.family, 0.0) + si
                counts[e.family] = counts.get(e.family, 0) + int(ci)
    finally:
        masked.remove()
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
