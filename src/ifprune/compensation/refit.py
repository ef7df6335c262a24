"""Output compensation, the maths: refit the kept channels' down projection so the k-wide FFN
reproduces the full FFN's output (least squares on the FFN intermediate activations' second
moments). Pure tensor functions; `calibration.py` runs the passes that gather the moments and
`Compensator` applies the refit when a plan is loaded.

For a layer with down projection W [hidden, d] (and bias b, where the architecture has one) and the
intermediate activation h [d] with second moment G = E[h h^T] and mean mu = E[h], keeping channels
S gives the ridge-regularised least-squares map

    W'_S = (W G[:, S] + lam W_S) (G[S, S] + lam I)^-1

i.e. argmin E||W h - W'_S h_S||^2 + lam ||W'_S - W_S||^2. The ridge pulls toward the *original*
weights rather than toward zero, so a large lam is plain gathering, a plan that keeps every channel
gets W back exactly, and statistics from little text cannot drive the weights far from where they
were. With a bias the regressor is [h_S; 1] (the dropped channels' mean output moves into b).

The means-only variant (`mean_bias`) keeps W_S as gathered and moves only the dropped channels' mean
output into a bias: b' = b + W[:, ~S] mu[~S], the best constant for E||W h - W_S h_S - b'||^2. It needs
mu alone (L x d numbers, not L x d x d), so it fits models whose second moments do not fit in memory.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

from ..core.errors import IfpruneError


@dataclass
class Moments:
    """Running sums of one layer's FFN intermediate activations: sum h h^T, sum h, token count.

    `outer` is float32: each added batch is one matmul over thousands of tokens, so the running sum is over
    a few dozen batch products, not over tokens, and float64 would double what the largest models' moments
    hold in memory (L x d_ffn^2 of them)."""

    outer: torch.Tensor | None  # [d, d] float32; None: means only (compensation mode "mean")
    total: torch.Tensor  # [d] float64
    count: int = 0
    mirrored: bool = True  # whether `outer` below its diagonal stripes is filled in (`mirror`)

    STRIPE = 1024  # columns per row stripe of the upper-triangle products (none below this width)

    @classmethod
    def zeros(cls, d: int, out: torch.Tensor | None = None, second: bool = True) -> "Moments":
        """`out`: a [d, d] float32 buffer to sum into (a slice of all layers' moments), zeroed here. `second`:
        False sums the means only."""
        outer = None if not second else out.zero_() if out is not None else torch.zeros(d, d)
        return cls(outer, torch.zeros(d, dtype=torch.float64), 0)

    def add(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> None:
        """Add the rows of `x` [..., d] (optionally weighted per row: 0 drops padding)."""
        x = x.reshape(-1, x.shape[-1])
        if x.dtype != torch.bfloat16:  # bf16 rows (a bf16 model's, or autocast's) keep the fast bf16 matmul: it
            x = x.float()  # sums each batch in float32 and rounds once per batch, not per token
        if weight is not None:
            w = weight.reshape(-1).to(x)
            keep = w > 0
            x, w = x[keep], w[keep]
            xw = x * w[:, None]
        else:
            xw = x
        if self.outer is not None:
            stripes = self._stripes()
            for a, b in stripes:  # the sum is symmetric: each stripe from its diagonal block rightwards only
                self.outer[a:b, a:] += (x[:, a:b].T @ xw[:, a:]).float().to(self.outer.device)
            self.mirrored = len(stripes) == 1
        self.total += xw.sum(0, dtype=torch.float32).double().cpu()
        self.count += int(x.shape[0])

    def _stripes(self) -> list[tuple[int, int]]:
        d = self.outer.shape[0]
        n = max(1, d // self.STRIPE)
        edges = [round(i * d / n) for i in range(n + 1)]
        return list(zip(edges, edges[1:]))

    def mirror(self) -> "Moments":
        """Fill `outer` below the diagonal stripes from above it (a stripe at a time: no d x d temporary)."""
        if not self.mirrored and self.outer is not None:
            for a, b in self._stripes():
                self.outer[b:, a:b].copy_(self.outer[a:b, b:].T)
            self.mirrored = True
        return self

    def second_moment(self) -> torch.Tensor:
        if self.outer is None:
            raise IfpruneError("these moments hold means only (compensation mode 'mean')")
        return self.mirror().outer / max(self.count, 1)

    def mean(self) -> torch.Tensor:
        return self.total / max(self.count, 1)


@dataclass
class KeptBlocks:
    """What the refit of kept channels S needs, batched over layers: G[S, S], the cross moment
    E[y h_S^T] = (W G)[:, S], W[:, S] and mu[S]."""

    G_ss: torch.Tensor  # [..., k, k]
    cross: torch.Tensor  # [..., hidden, k]
    W_s: torch.Tensor  # [..., hidden, k]
    mu_s: torch.Tensor  # [..., k]
    y_mean: torch.Tensor  # [..., hidden]: E[W h] (no bias)

    def mix(self, other: "KeptBlocks", weight: float) -> "KeptBlocks":
        """(1 - weight) * self + weight * other, for the moments (e.g. calibration and a prompt's own)."""
        m = lambda a, b: (1 - weight) * a + weight * b  # noqa: E731
        return KeptBlocks(m(self.G_ss, other.G_ss), m(self.cross, other.cross), self.W_s,
                          m(self.mu_s, other.mu_s), m(self.y_mean, other.y_mean))


def _take_cols(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return torch.gather(x, -1, idx.unsqueeze(-2).expand(*x.shape[:-1], idx.shape[-1]))


def _select(x: torch.Tensor, idx: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """x's entries at idx [..., k] along each of `dims` (counted after idx's leading dimensions, which x
    shares): one index_select per leading index, 3-4x faster here than a batched gather."""
    lead = idx.shape[:-1]
    xf, idf = x.reshape(-1, *x.shape[len(lead):]), idx.reshape(-1, idx.shape[-1])
    out = []
    for a, i in zip(xf, idf):
        for dim in dims:
            a = a.index_select(dim, i)
        out.append(a)
    out = torch.stack(out)
    return out.reshape(*lead, *out.shape[1:])


def kept_blocks(W: torch.Tensor, G: torch.Tensor, mu: torch.Tensor, idx: torch.Tensor,
                WG: torch.Tensor | None = None, dtype: torch.dtype = torch.float32) -> KeptBlocks:
    """Blocks of full moments G [..., d, d], mu [..., d] (WG: precomputed W @ G, reused across plans)."""
    Wf, mu_f = W.to(dtype), mu.to(dtype)
    cross = _select(WG, idx, (1,)).to(dtype) if WG is not None else Wf @ _select(G, idx, (1,)).to(dtype)  # (W G)[:, S]
    return KeptBlocks(_select(G, idx, (0, 1)).to(dtype), cross, _select(Wf, idx, (1,)),
                      torch.gather(mu_f, -1, idx), (Wf @ mu_f.unsqueeze(-1)).squeeze(-1))


def token_blocks(W: torch.Tensor, H: torch.Tensor, idx: torch.Tensor, dtype: torch.dtype = torch.float32) -> KeptBlocks:
    """Blocks of the moments of a few tokens' activations H [..., T, d] (a prompt), without ever
    forming their d x d moment: G[S, S] = H_S^T H_S / T and (W G)[:, S] = (W H^T) H_S / T."""
    Hf, Wf = H.to(dtype), W.to(dtype)
    T = H.shape[-2]
    H_s = _take_cols(Hf, idx)  # [..., T, k]
    WH = Wf @ Hf.transpose(-1, -2)  # [..., hidden, T]
    return KeptBlocks(H_s.transpose(-1, -2) @ H_s / T, WH @ H_s / T, _take_cols(Wf, idx),
                      H_s.mean(-2), WH.mean(-1))


def refit_down(W: torch.Tensor, bias: torch.Tensor | None, G: torch.Tensor, mu: torch.Tensor,
               keep: torch.Tensor, ridge: float, WG: torch.Tensor | None = None,
               dtype: torch.dtype = torch.float32, shrink: float = 0.0):
    """(W'_S, b' or None): the kept channels' refit down projection (see the module docstring).

    Batched over leading dimensions (e.g. all layers at once): W [..., hidden, d] original weights,
    bias [..., hidden] or None, G [..., d, d] second moment, mu [..., d] mean, keep [..., k] channel
    indices, ridge: lam as a fraction of the mean of diag(G[S, S]) (per layer), WG: optional
    precomputed W @ G (reused across plans). Returns W's dtype.
    """
    idx = keep.to(torch.long)
    if idx.shape[-1] == W.shape[-1]:  # every channel kept: the original weights, exactly
        return W.clone(), None if bias is None else bias.clone()
    return solve_refit(kept_blocks(W, G, mu, idx, WG, dtype), bias, ridge, W.dtype, shrink)


def mean_bias(W: torch.Tensor, bias: torch.Tensor | None, mu: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """b' [hidden] = b + W[:, ~S] mu[~S] (see the module docstring) for one layer: W [hidden, d] in any dtype
    (multiplied in float32), mu [d], keep [k] channel indices; returned in float32."""
    dropped = mu.float().clone()
    dropped[keep.to(torch.long)] = 0
    b = W.float() @ dropped
    return b if bias is None else b + bias.float()


def solve_refit(blocks: KeptBlocks, bias: torch.Tensor | None, ridge: float, out_dtype: torch.dtype,
                shrink: float = 0.0):
    """The ridge least-squares solve on kept blocks, by Cholesky in the blocks' dtype (float32
    agrees with float64 to ~1e-7 at ridge 1e-2, measured, and is 3x faster); a block that is not
    positive definite even with the ridge falls back to the pseudo-inverse, with a warning.

    `shrink` a in [0, 1) replaces G by (1 - a) G + a diag(G) (covariance shrinkage): the same as
    adding a variance-weighted ridge a * sum_j G_jj ||w'_j - w_j||^2 toward the original weights, which,
    unlike the uniform ridge, does not depend on each channel's scale."""
    G_ss, cross, W_s = blocks.G_ss, blocks.cross, blocks.W_s
    dtype = G_ss.dtype
    if shrink:
        diag = G_ss.diagonal(dim1=-2, dim2=-1)
        G_ss = (1 - shrink) * G_ss + shrink * torch.diag_embed(diag)
        cross = (1 - shrink) * cross + shrink * W_s * diag.unsqueeze(-2)
    lam = ridge * G_ss.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(1e-12)  # [...]
    if bias is None:
        A, B, B0 = G_ss, cross, W_s
    else:  # regress on [h_S; 1]: the augmented moment carries mu in its last row and column
        k = G_ss.shape[-1]
        mu_s, b_f = blocks.mu_s, bias.to(dtype)
        A = torch.zeros(*G_ss.shape[:-2], k + 1, k + 1, dtype=dtype)
        A[..., :k, :k] = G_ss
        A[..., :k, k] = mu_s
        A[..., k, :k] = mu_s
        A[..., k, k] = 1.0
        y_mean = blocks.y_mean + b_f  # E[y]
        B = torch.cat([cross + b_f.unsqueeze(-1) * mu_s.unsqueeze(-2), y_mean.unsqueeze(-1)], -1)
        B0 = torch.cat([W_s, b_f.unsqueeze(-1)], -1)
    eye = torch.eye(A.shape[-1], dtype=dtype)
    A = A + lam[..., None, None] * eye
    B = B + lam[..., None, None] * B0
    L, info = torch.linalg.cholesky_ex(A)
    # X A = B with A = L L^T: two right-side triangular solves (no transposed copies; ~15% faster here)
    X = torch.linalg.solve_triangular(L, torch.linalg.solve_triangular(L.mT, B, upper=True, left=False),
                                      upper=False, left=False)
    bad = info.reshape(-1) != 0
    if bool(bad.any()):
        warnings.warn(f"ifprune: compensation statistics are ill-conditioned for {int(bad.sum())} layer(s) even "
                      "with the ridge; solved by pseudo-inverse there (raise --ridge or give more calibration text)",
                      stacklevel=2)
        Xf, Af, Bf = X.reshape(-1, *X.shape[-2:]), A.reshape(-1, *A.shape[-2:]), B.reshape(-1, *B.shape[-2:])
        for j in bad.nonzero().flatten().tolist():
            Xf[j] = (Bf[j].double() @ torch.linalg.pinv(Af[j].double(), hermitian=True)).to(dtype)
        X = Xf.reshape(X.shape)
    if bias is None:
        return X.to(out_dtype), None
    return X[..., :-1].to(out_dtype), X[..., -1].to(bias.dtype)


def output_error(W: torch.Tensor, bias: torch.Tensor | None, W_s: torch.Tensor, b_s: torch.Tensor | None,
                 h: torch.Tensor, keep: torch.Tensor) -> float:
    """Mean squared error of the k-wide down projection against the full one on activations h [N, d]."""
    h = h.detach()
    full = h.double() @ W.double().T + (bias.double() if bias is not None else 0)
    part = h.double()[:, keep] @ W_s.double().T + (b_s.double() if b_s is not None else 0)
    return float((full - part).pow(2).sum(-1).mean())


def reconstruct(x: torch.Tensor, keep: torch.Tensor, G: torch.Tensor, ridge: float) -> torch.Tensor:
    """The full-width activation the refit implies from the kept channels: x_hat = M_S x_S with
    M_S = (G[:, S] + lam E_S)(G[S, S] + lam I)^-1, so that W x_hat = W'_S x_S for *any* W (the refit
    of a bias-free down projection is linear in W). Training under compensated plans feeds x_hat to
    the (LoRA-tuned) down projection: what the refit of the tuned weights computes at inference, and
    differentiable in x (so in the mask values that scale it) and in W.

    x [B, ..., d] (channels outside S are ignored), keep [B, k] channel indices per example, G [d, d]
    this layer's second moment, ridge as in `refit_down`. Computed in float32; returns x's dtype."""
    B, d = x.shape[0], x.shape[-1]
    idx = keep.to(torch.long)
    k = idx.shape[-1]
    if k == d:
        return x
    xf = x.reshape(B, -1, d).float()
    x_s = torch.gather(xf, -1, idx.unsqueeze(1).expand(B, xf.shape[1], k))  # [B, T, k]
    Gf = G.float()
    G_rows = Gf[idx]  # [B, k, d] = G[S, :] (= G[:, S]^T)
    G_ss = torch.gather(G_rows, -1, idx.unsqueeze(1).expand(B, k, k))
    lam = ridge * G_ss.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(1e-12)  # [B]
    A = G_ss + lam[:, None, None] * torch.eye(k, dtype=G_ss.dtype, device=G_ss.device)
    L, info = torch.linalg.cholesky_ex(A)
    if bool((info != 0).any()):
        raise IfpruneError("compensation statistics are not positive definite even with the ridge: gather them over "
                           "more calibration text, or train with compensate: none")
    u = torch.cholesky_solve(x_s.transpose(-1, -2), L)  # [B, k, T]
    out = G_rows.transpose(-1, -2) @ u  # [B, d, T]
    out = out.scatter_add(1, idx.unsqueeze(-1).expand_as(u), lam[:, None, None] * u)
    return out.transpose(-1, -2).reshape(x.shape).to(x.dtype)
