"""Warm start of the predictor head: regress each prompt's GRIFFIN scores before joint training.

Why: a head whose output starts at one mean mask stays there in a short run (the CPU smoke run:
overlap 0.99 across families after it), i.e. it becomes a learned-static mask. Fitting the head
first to GRIFFIN's per-prompt scores needs forward passes only, and joint training then starts from
per-prompt masks instead of one shared one. The learned-static baseline starts from the mean of the
same scores (the `griffin` prior), so both methods get the same teacher and the same data.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F

from ..selection.selectors import GriffinSelector

log = logging.getLogger(__name__)


def topk_agreement(pred: torch.Tensor, target: torch.Tensor, width: int) -> float:
    """Mean fraction of the target's top-`width` channels per layer that `pred` also keeps."""
    a = torch.zeros_like(pred, dtype=torch.bool).scatter_(-1, pred.topk(width, -1).indices, True)
    b = torch.zeros_like(target, dtype=torch.bool).scatter_(-1, target.topk(width, -1).indices, True)
    return float((a & b).sum(-1).float().mean() / width)


def collect_targets(lm, rows: list[torch.Tensor], *, backbone_layers: int | None = None, batch_size: int = 8,
                    progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled [N, hidden], standardised GRIFFIN scores [N, layers, d_ffn] in bf16) for prompts given as
    1-D token-id rows, from one dense forward per batch (batched by length, results in input order)."""
    from ..core.prompting import length_batches
    from ..selection.heads import pool_last, standardise

    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    hidden = lm.model.config.get_text_config().hidden_size
    pooled = torch.zeros(len(rows), hidden)
    targets = torch.zeros(len(rows), lm.num_layers, lm.d_ffn, dtype=torch.bfloat16)
    batches = length_batches(rows, pad, batch_size)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, total=-(-len(rows) // batch_size), desc="warm start: GRIFFIN targets", unit="batch")
    for idx, ids, att in batches:
        ids, att = ids.to(lm.device), att.to(lm.device)
        scores, hs = GriffinSelector.scores_from_ids(lm, ids, att, hidden_states=True)
        pooled[idx] = pool_last(hs, att, backbone_layers).cpu()
        targets[idx] = standardise(scores).to(torch.bfloat16)
    return pooled, targets


def fit_head(head, pooled: torch.Tensor, targets: torch.Tensor, *, width: int, epochs: int = 30, lr: float = 1e-3,
             batch_size: int = 64, val_fraction: float = 0.1, weight_decay: float = 0.01, seed: int = 0) -> dict:
    """Fit `head` (a PredictorHead) to the targets by MSE; keep the epoch with the best held-out top-k
    agreement. Returns statistics for the log."""
    n = pooled.shape[0]
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    n_val = max(1, int(round(n * val_fraction))) if n > 1 else 0
    val, tr = perm[:n_val], perm[n_val:]
    if len(tr) == 0:
        tr = perm
    with torch.no_grad():
        head.fc2.bias.copy_(targets[tr].float().mean(0).reshape(-1))
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(len(tr) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1), pct_start=0.1)

    def evaluate() -> tuple[float, float]:
        if n_val == 0:
            return float("nan"), float("nan")
        with torch.no_grad():
            pred = head(pooled[val])
            tgt = targets[val].float()
            return float(F.mse_loss(pred, tgt)), topk_agreement(pred, tgt, width)

    mse0, agree0 = evaluate()
    mean_agree = topk_agreement(targets[tr].float().mean(0, keepdim=True).expand(n_val, -1, -1),
                                targets[val].float(), width) if n_val else float("nan")
    best = (agree0, {k: v.detach().clone() for k, v in head.state_dict().items()}, 0, mse0)
    history = []
    head.train()
    for epoch in range(1, epochs + 1):
        order = tr[torch.randperm(len(tr), generator=g)]
        total = 0.0
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            loss = F.mse_loss(head(pooled[idx]), targets[idx].float())
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        mse, agree = evaluate()
        history.append({"epoch": epoch, "train_mse": total / len(order), "val_mse": mse, "val_topk_agreement": agree})
        if n_val and agree > best[0]:
            best = (agree, {k: v.detach().clone() for k, v in head.state_dict().items()}, epoch, mse)
    if n_val:
        head.load_state_dict(best[1])
    head.eval()
    stats = {"prompts": n, "val_prompts": n_val, "epochs": epochs, "best_epoch": best[2],
             "val_mse": best[3], "val_topk_agreement": best[0], "mean_mask_topk_agreement": mean_agree,
             "history": history}
    log.info("warm start: held-out top-k agreement with GRIFFIN %.3f (one mean mask: %.3f)", best[0], mean_agree)
    return stats
