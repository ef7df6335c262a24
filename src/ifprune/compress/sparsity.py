"""One-shot 2:4 semi-structured pruning (Wanda and SparseGPT) of the linear layers of every decoder
block, and the rules that keep the 2:4 pattern intact under plans and LoRA merges.

2:4 means: in every group of 4 consecutive weights along a linear's *input* dimension (the matmul's
reduction dimension, the one NVIDIA's sparse tensor cores compress), at most 2 are non-zero.

Plans and 2:4. Gathering a plan's FFN channels keeps whole rows of gate/up (their groups run along
the hidden dimension and survive) but picks columns of down, which scatters down's groups. ifprune
therefore keeps the down projection's *dense* weights plus each channel's calibration activation
norm `a_j`, and imposes 2:4 on whatever columns are in use (all of them for the full model, the
plan's k for a compact model) with the Wanda saliency |W_ij| * a_j: down is exactly 2:4 after any
plan and keeps the best half of the columns it actually has. The cheaper alternative ("reprune":
re-impose 2:4 on the gathered, already pruned columns) stores nothing extra but keeps only ~41% of
down's weights; docs/compression.md measures both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..core.errors import IfpruneError
from ..core.ffn import Conv1D, FFNLayout
from ..core.hooks import forward_until

METHODS = ("wanda", "sparsegpt")
DOWN_POLICIES = ("regather", "reprune")


# --- the pattern ------------------------------------------------------------------------------
def check_groups(in_features: int, name: str = "layer") -> None:
    if in_features % 4:
        raise IfpruneError(
            f"{name} has input width {in_features}, not a multiple of 4, so it cannot hold a 2:4 pattern; "
            "leave it dense (exclude it) or pad the model"
        )


def mask_2_4(scores: torch.Tensor) -> torch.Tensor:
    """Boolean mask keeping the 2 highest scores of every group of 4 along the last dimension."""
    check_groups(scores.shape[-1], f"tensor of shape {tuple(scores.shape)}")
    g = scores.reshape(-1, 4)
    # stable sort: equal scores keep the lower index, so masks are deterministic
    top = torch.sort(g.float(), dim=1, descending=True, stable=True).indices[:, :2]
    mask = torch.zeros_like(g, dtype=torch.bool).scatter_(1, top, True)
    return mask.reshape(scores.shape)


def is_2_4(weight: torch.Tensor) -> bool:
    """True when every group of 4 along the input dimension holds at most 2 non-zeros."""
    if weight.shape[-1] % 4:
        return False
    return bool(((weight.reshape(-1, 4) != 0).sum(1) <= 2).all())


def density(weight: torch.Tensor) -> float:
    return float((weight != 0).float().mean())


# --- which layers -----------------------------------------------------------------------------
def decoder_blocks(model: nn.Module, layout: FFNLayout) -> list[tuple[str, nn.Module]]:
    """The decoder blocks that hold the layout's FFNs, in order (found by structure, not name)."""
    first = layout.layers[0].name
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) == layout.num_layers and first.startswith(f"{name}.0."):
            return [(f"{name}.{i}", b) for i, b in enumerate(mod)]
    raise IfpruneError("cannot locate the decoder blocks that hold the FFNs")  # pragma: no cover


def prunable_linears(model: nn.Module, layout: FFNLayout) -> list[list[tuple[str, nn.Linear]]]:
    """Per block: every attention and FFN linear (qualified name, module)."""
    out = []
    for bname, block in decoder_blocks(model, layout):
        mods = []
        for n, m in block.named_modules():
            if isinstance(m, Conv1D):
                raise IfpruneError(
                    f"{bname}.{n} is a GPT-2 Conv1D layer; 2:4 pruning supports nn.Linear models (Llama, Qwen, "
                    "Mistral, Gemma, Phi-3, GPT-NeoX)"
                )
            if isinstance(m, nn.Linear):
                check_groups(m.in_features, f"{bname}.{n}")
                mods.append((f"{bname}.{n}", m))
        out.append(mods)
    return out


def down_names(model: nn.Module, layout: FFNLayout) -> list[str]:
    ids = {id(layer.down): i for i, layer in enumerate(layout.layers)}
    names = [""] * layout.num_layers
    for n, m in model.named_modules():
        if id(m) in ids:
            names[ids[id(m)]] = n
    return names


# --- calibration ------------------------------------------------------------------------------
def calibration_chunks(tokenizer, path: str | Path, tokens: int = 4096, seq_len: int = 256) -> list[torch.Tensor]:
    """Token chunks [1, seq_len] from a local text/JSONL file (e.g. ../shared/data/pretrain/...)."""
    from ..compensation.calibration import read_calibration_text

    if tokens < seq_len or seq_len < 8:
        raise IfpruneError(f"calibration needs tokens >= seq_len >= 8, got tokens={tokens}, seq_len={seq_len}")
    docs = read_calibration_text(path, max_chars=tokens * 12)
    ids = tokenizer("\n\n".join(docs), return_tensors="pt")["input_ids"][0][:tokens]
    n = ids.numel() // seq_len
    if n == 0:
        raise IfpruneError(f"text file {path} has fewer than {seq_len} tokens")
    return [c.unsqueeze(0) for c in ids[: n * seq_len].split(seq_len)]


@dataclass
class _Stats:
    sq: torch.Tensor  # sum of squared inputs per input feature
    hessian: torch.Tensor | None
    count: int = 0


@torch.no_grad()
def _block_stats(model, block, mods, chunks, hessian: bool) -> dict[str, _Stats]:
    """Inputs of `mods` on the calibration chunks, with everything before `block` as it is now
    (already pruned blocks included: sequential pruning). The forward stops after `block`."""
    stats: dict[str, _Stats] = {}
    handles = []

    def hook_for(name):
        def pre(module, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).float()
            st = stats[name]
            st.sq += x.pow(2).sum(0).double().cpu()
            if st.hessian is not None:
                st.hessian += (x.T @ x).double().cpu()
            st.count += x.shape[0]

        return pre

    for name, m in mods:
        stats[name] = _Stats(torch.zeros(m.in_features, dtype=torch.float64),
                             torch.zeros(m.in_features, m.in_features, dtype=torch.float64) if hessian else None)
        handles.append(m.register_forward_pre_hook(hook_for(name)))

    device = next(model.parameters()).device
    try:
        for c in chunks:
            forward_until(block, lambda: model(c.to(device), use_cache=False))
    finally:
        for h in handles:
            h.remove()
    return stats


# --- the two pruning rules --------------------------------------------------------------------
def wanda_scores(weight: torch.Tensor, act_norm: torch.Tensor) -> torch.Tensor:
    """|W_ij| * ||x_j||: the Wanda saliency, compared within each output row's groups."""
    return weight.detach().abs().float() * act_norm.to(weight.device).float().unsqueeze(0)


@torch.no_grad()
def sparsegpt_2_4(weight: torch.Tensor, hessian: torch.Tensor, block_size: int = 128,
                  damp: float = 0.01) -> torch.Tensor:
    """2:4-prune `weight` [out, in] with SparseGPT's optimal-brain-surgeon update: each pruned weight's
    error is spread over the not-yet-visited columns through the inverse Hessian of the layer input.

    Runs on one CPU thread: the column loop is thousands of tiny ops, which multi-threading slows
    down ~10x on a busy machine."""
    threads = torch.get_num_threads()
    if weight.device.type == "cpu":
        torch.set_num_threads(1)
    try:
        return _sparsegpt(weight, hessian, block_size, damp)
    finally:
        torch.set_num_threads(threads)


def _sparsegpt(weight, hessian, block_size, damp):
    W = weight.detach().double().clone()
    H = hessian.double().clone().to(W.device)
    cols = W.shape[1]
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += damp * torch.diag(H).mean() * torch.eye(cols, dtype=H.dtype, device=H.device)
    try:
        Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    except torch.linalg.LinAlgError:
        raise IfpruneError("the calibration Hessian is singular: use more calibration tokens or a larger damp") from None
    block_size -= block_size % 4
    for b0 in range(0, cols, block_size):
        b1 = min(b0 + block_size, cols)
        W1 = W[:, b0:b1].clone()
        Hi = Hinv[b0:b1, b0:b1]
        err = torch.zeros_like(W1)
        drop = torch.zeros_like(W1, dtype=torch.bool)
        for i in range(b1 - b0):
            if i % 4 == 0:
                s = W1[:, i:i + 4].pow(2) / torch.diag(Hi)[i:i + 4].pow(2).unsqueeze(0)
                drop[:, i:i + 4] = ~mask_2_4(s)
            w = W1[:, i]
            q = torch.where(drop[:, i], torch.zeros_like(w), w)
            e = (w - q) / Hi[i, i]
            W1[:, i:] -= e.unsqueeze(1) * Hi[i, i:].unsqueeze(0)
            W1[:, i] = q
            err[:, i] = e
        W[:, b0:b1] = W1
        W[:, b1:] -= err @ Hinv[b0:b1, b1:]
    return W.to(weight.dtype)


@dataclass
class PruneResult:
    """What the pruning needs to keep: per-layer FFN activation norms [layers, d_ffn] (the saliency
    that re-imposes 2:4 on down after a plan) and, for "regather", the dense down weights."""

    act_norm: torch.Tensor
    down_dense: list[torch.Tensor] | None
    pruned: list[str]


@torch.no_grad()
def prune_2_4(lm, calibration: str | Path, *, method: str = "wanda", down: str = "regather",
              tokens: int = 4096, seq_len: int = 256, progress=None) -> PruneResult:
    """Prune every attention and FFN linear of `lm.model` to 2:4 in place, block by block."""
    if method not in METHODS:
        raise IfpruneError(f"unknown pruning method {method!r}; choose from {', '.join(METHODS)}")
    if down not in DOWN_POLICIES:
        raise IfpruneError(f"unknown down policy {down!r}; choose from {', '.join(DOWN_POLICIES)}")
    model, layout = lm.model, lm.layout
    per_block = prunable_linears(model, layout)
    chunks = calibration_chunks(lm.tokenizer, calibration, tokens, seq_len)
    blocks = decoder_blocks(model, layout)
    dnames = set(down_names(model, layout))
    act_norm = torch.zeros(layout.num_layers, layout.d_ffn)
    down_dense: list[torch.Tensor] = []
    pruned = []
    for li, ((_, block), mods) in enumerate(zip(blocks, per_block)):
        stats = _block_stats(model, block, mods, chunks, hessian=method == "sparsegpt")
        for name, m in mods:
            st = stats[name]
            norm = st.sq.sqrt().float()
            if name in dnames:
                act_norm[li] = norm
                if down == "regather":
                    down_dense.append(m.weight.detach().clone())
                    m.weight.mul_(mask_2_4(wanda_scores(m.weight, norm)))
                    pruned.append(name)
                    continue
            if method == "wanda":
                m.weight.mul_(mask_2_4(wanda_scores(m.weight, norm)))
            else:
                m.weight.copy_(sparsegpt_2_4(m.weight, st.hessian / max(st.count, 1)))
            pruned.append(name)
        if progress:
            progress(li + 1, layout.num_layers)
    return PruneResult(act_norm, down_dense if down == "regather" else None, pruned)


def impose_down_2_4(down_weight: torch.Tensor, act_norm: torch.Tensor) -> torch.Tensor:
    """The 2:4 mask for a (possibly gathered) down weight [hidden, k] from its columns' act norms."""
    return mask_2_4(wanda_scores(down_weight, act_norm))


# --- plans ------------------------------------------------------------------------------------
@torch.no_grad()
def sparsify_compact(compact, plan, act_norm: torch.Tensor, down_dense: list[torch.Tensor] | None) -> None:
    """After `compact.load(plan)`: make every compact down weight 2:4 again (see module docstring).

    With `down_dense` (policy "regather") the plan's columns come from the dense weights; without it
    ("reprune") the gathered, already pruned columns are re-grouped, dropping more weights."""
    if compact.plan is None or compact.plan.hash != plan.hash:
        compact.load(plan)
    for li, layer in enumerate(compact.compact_layout.layers):
        idx = plan.indices[li]
        w = layer.down.weight
        if down_dense is not None:
            w.copy_(down_dense[li].to(w.device, w.dtype).index_select(1, idx.to(w.device)))
        w.mul_(impose_down_2_4(w, act_norm[li, idx]))
    compact._slots = None  # the buffers are no longer the full model's rows: the next load gathers them all


# --- LoRA recovery that keeps the pattern -----------------------------------------------------
def sparsity_masks(model: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    """The current non-zero pattern of each named linear (2:4: top-2 |W| per group)."""
    return {n: mask_2_4(model.get_submodule(n).weight.detach().abs()) for n in names}


@torch.no_grad()
def merge_lora_keep_2_4(peft_model, masks: dict[str, torch.Tensor]) -> nn.Module:
    """Merge a peft LoRA model and mask the merged weights, so the delta never fills pruned slots.

    Returns the base model; raises if a masked weight is missing (names must be base-model names)."""
    base = peft_model.merge_and_unload()
    for name, mask in masks.items():
        try:
            w = base.get_submodule(name).weight
        except AttributeError:
            raise IfpruneError(f"merged model has no layer {name}; pass masks named as in the base model") from None
        w.mul_(mask.to(w.device))
    return base


def pattern_report(model: nn.Module, names: list[str]) -> dict:
    """Checks used by tests and the CLI: every named weight 2:4, and the overall density."""
    nz = total = 0
    bad = []
    for n in names:
        w = model.get_submodule(n).weight
        if not is_2_4(w):
            bad.append(n)
        nz += int((w != 0).sum())
        total += w.numel()
    return {"layers": len(names), "all_2_4": not bad, "not_2_4": bad, "density": nz / max(total, 1)}


# --- GPU semi-structured kernels ---------------------------------------------------------------
SEMI_DTYPES = (torch.float16, torch.bfloat16)


def to_semi_structured(model: nn.Module, names: list[str]) -> int:
    """Swap each named 2:4 linear's weight for a `torch.sparse` semi-structured tensor (cuSPARSELt or
    CUTLASS on CUDA). Refuses (IfpruneError) on CPU, wrong dtype or non-2:4 weights rather than
    silently running dense; returns the number of layers converted."""
    from torch.sparse import to_sparse_semi_structured

    for n in names:
        w = model.get_submodule(n).weight
        if w.device.type != "cuda":
            raise IfpruneError(
                f"semi-structured sparse kernels need a CUDA GPU (compute capability >= 8.0); {n} is on "
                f"{w.device.type}. On CPU the 2:4 model runs as a dense model with zeros (no speed-up)"
            )
        if w.dtype not in SEMI_DTYPES:
            raise IfpruneError(f"semi-structured sparse kernels take float16/bfloat16 weights; {n} is {w.dtype} "
                               "(load with --dtype bfloat16)")
        if not is_2_4(w):
            raise IfpruneError(f"{n} is not 2:4 sparse; prune it first (ifprune compress --sparsity 2:4)")
        if min(w.shape) < 64 or w.shape[0] % 64 or w.shape[1] % 64:
            raise IfpruneError(f"{n} has shape {tuple(w.shape)}; semi-structured kernels need both sides "
                               "multiples of 64")
    for n in names:
        mod = model.get_submodule(n)
        mod.weight = nn.Parameter(to_sparse_semi_structured(mod.weight.detach()), requires_grad=False)
    return len(names)


def expected_reprune_density() -> float:
    """Density of down under "reprune" when gathered columns are independent halves: E[min(Bin(4,1/2),2)]/4."""
    return sum(math.comb(4, c) * min(c, 2) for c in range(5)) / 16 / 4
