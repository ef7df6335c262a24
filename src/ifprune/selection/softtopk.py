"""SoftTopK: the differentiable top-k of IFPruning (CoLT5 / CoDA entropy-regularised top-k).

Per layer it solves  max_l <s, l> + eps * H(l)  s.t.  sum(l) = k, 0 <= l <= 1  by a few rounds of
coordinate descent on the two dual variables (a: the sum constraint, b: the upper bound):

    a = eps * (log k - logsumexp((s + b) / eps))
    b = -relu(s + a)
    lambda = exp((s + a + b) / eps)

and returns  m = lambda * TopK(lambda, k)  with TopK a hard 0/1 indicator. So every row has exactly
k nonzeros (the sparsity target holds by construction, no penalty term), the kept values carry the
gradient back to the scores, and as eps -> 0 the mask tends to the hard top-k indicator.
"""

from __future__ import annotations

import math

import torch

from ..core.errors import IfpruneError


def soft_topk_lambda(scores: torch.Tensor, k: int, *, eps: float = 0.1, iterations: int = 20) -> torch.Tensor:
    """lambda in [0, 1] with sum k along the last dim (up to the solver's tolerance); differentiable."""
    d = scores.shape[-1]
    if not 1 <= k <= d:
        raise IfpruneError(f"top-k size {k} is out of range: use 1..{d} (the last dimension of the scores)")
    if not eps > 0:
        raise IfpruneError(f"SoftTopK epsilon must be > 0, got {eps}")
    if iterations < 1:
        raise IfpruneError(f"SoftTopK needs at least 1 iteration, got {iterations}")
    s = scores.float()
    if k == d:
        return torch.ones_like(s)
    log_k = math.log(k)
    # Warm start at the hard solution's threshold (midway between the k-th and (k+1)-th score), so a
    # few iterations suffice even for small eps; from a cold start (b = 0) each round frees only about
    # one more entry and small eps would need ~k rounds. The fixed point is the same.
    top = s.detach().topk(k + 1, dim=-1).values
    a0 = -(top[..., k - 1 : k] + top[..., k : k + 1]) / 2
    b = -torch.relu(s.detach() + a0)
    a = a0
    for _ in range(iterations):
        a = eps * (log_k - torch.logsumexp((s + b) / eps, dim=-1, keepdim=True))
        b = -torch.relu(s + a)
    return torch.exp((s + a + b) / eps)


def hard_topk_indicator(values: torch.Tensor, k: int) -> torch.Tensor:
    """0/1 tensor with ones at the k largest entries of the last dim (no gradient)."""
    idx = values.detach().topk(k, dim=-1).indices
    return torch.zeros_like(values).scatter_(-1, idx, 1.0)


def soft_topk(scores: torch.Tensor, k: int, *, eps: float = 0.1, iterations: int = 20) -> torch.Tensor:
    """The training mask m = lambda * TopK(lambda, k): exactly k nonzeros per row, values in (0, 1]."""
    lam = soft_topk_lambda(scores, k, eps=eps, iterations=iterations)
    return lam * hard_topk_indicator(lam, k)


def pairwise_overlap(masks: torch.Tensor) -> float:
    """Mean over pairs of examples (and layers) of the fraction of kept channels two masks share.

    `masks` is [batch, layers, d_ffn] with k nonzeros per row; 1.0 means every example got the same
    mask (mask collapse), k/d_ffn is what independent random masks would give.
    """
    if masks.dim() != 3 or masks.shape[0] < 2:
        return float("nan")
    on = (masks.detach() != 0).float()
    k = on[0, 0].sum().clamp_min(1)
    inter = torch.einsum("bld,cld->bcl", on, on) / k  # [B, B, L]
    B = on.shape[0]
    off = ~torch.eye(B, dtype=torch.bool, device=on.device)
    return float(inter[off].mean())
