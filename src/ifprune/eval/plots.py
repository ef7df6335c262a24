"""Mask analysis (how much plans for different prompts agree, per layer and across task families;
the paper's Figure 3) and metric-vs-active-parameters plots. PNG via matplotlib's Agg backend."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch

from ..core.errors import IfpruneError


def _pairwise(masks_a: torch.Tensor, masks_b: torch.Tensor | None, width: int) -> torch.Tensor:
    """Mean over pairs of per-layer overlap |A∩B|/k; masks [n, layers, d]. Within a group (b None) skips i==j."""
    a = masks_a.float()
    if masks_b is None:
        n = a.shape[0]
        if n < 2:
            raise IfpruneError("overlap within a family needs at least 2 plans")
        inter = torch.einsum("ild,jld->ijl", a, a) / width
        off = ~torch.eye(n, dtype=torch.bool)
        return inter[off].mean(0)
    inter = torch.einsum("ild,jld->ijl", a, masks_b.float()) / width
    return inter.reshape(-1, inter.shape[-1]).mean(0)


def overlap_analysis(plans: dict[str, list]) -> dict:
    """plans: family -> list of Plan (same width). Returns per-layer within/across means and a
    family x family matrix (mean over layers)."""
    fams = [f for f, p in plans.items() if len(p) >= 2]
    if len(fams) < 1:
        raise IfpruneError("overlap analysis needs at least one family with 2 or more plans")
    width = next(iter(plans.values()))[0].width
    masks = {f: torch.stack([p.to_mask() for p in plans[f]]) for f in fams}
    within = {f: _pairwise(masks[f], None, width) for f in fams}
    across = {(a, b): _pairwise(masks[a], masks[b], width) for a, b in itertools.combinations(fams, 2)}
    matrix = np.zeros((len(fams), len(fams)))
    for i, a in enumerate(fams):
        matrix[i, i] = float(within[a].mean())
        for j, b in enumerate(fams):
            if i < j:
                matrix[i, j] = matrix[j, i] = float(across[(a, b)].mean())
    layers = next(iter(within.values())).numel()
    return {
        "families": fams, "width": width, "prompts_per_family": {f: len(plans[f]) for f in fams},
        "within_per_layer": torch.stack(list(within.values())).mean(0).tolist(),
        "across_per_layer": torch.stack(list(across.values())).mean(0).tolist() if across else [float("nan")] * layers,
        "chance": width / next(iter(plans.values()))[0].d_ffn,
        "matrix": matrix.tolist(),
    }


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_overlap(analysis: dict, path: str | Path, title: str = "") -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    x = np.arange(len(analysis["within_per_layer"]))
    ax.plot(x, analysis["within_per_layer"], marker="o", ms=3, label="within family")
    ax.plot(x, analysis["across_per_layer"], marker="s", ms=3, label="across families")
    ax.axhline(analysis["chance"], color="grey", ls="--", lw=1, label="random plans (k/d)")
    ax.set_xlabel("layer")
    ax.set_ylabel("mean pairwise overlap")
    ax.set_ylim(0, 1)
    ax.set_title(title or "Plan overlap per layer")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_heatmap(analysis: dict, path: str | Path, title: str = "") -> Path:
    plt = _plt()
    fams, m = analysis["families"], np.array(analysis["matrix"])
    fig, ax = plt.subplots(figsize=(1.2 * len(fams) + 2, 1.0 * len(fams) + 1.5))
    im = ax.imshow(m, vmin=analysis["chance"], vmax=1, cmap="viridis")
    ax.set_xticks(range(len(fams)), fams, rotation=30, ha="right")
    ax.set_yticks(range(len(fams)), fams)
    for i in range(len(fams)):
        for j in range(len(fams)):
            ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", color="w" if m[i, j] < 0.8 else "k", fontsize=8)
    fig.colorbar(im, ax=ax, label="mean overlap (all layers)")
    ax.set_title(title or "Plan overlap across families")
    fig.tight_layout()
    return _save(fig, path)


def plot_metric_vs_params(report: dict, out_dir: str | Path) -> list[Path]:
    """One PNG per suite: primary metric vs active parameters, a line per selector, with 95% CIs."""
    plt = _plt()
    paths = []
    for suite in report["suites"]:
        rows = [r for r in report["results"] if r["suite"] == suite]
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for sel in dict.fromkeys(r["selector"] for r in rows):
            rs = sorted((r for r in rows if r["selector"] == sel), key=lambda r: r["active_params"])
            x = [r["active_params"] / 1e6 for r in rs]
            m = [r["metrics"][r["primary"]] for r in rs]
            y = np.array([v["value"] for v in m])
            err = np.abs(np.array([v["ci95"] for v in m]).T - y)
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=sel)
        ax.set_xlabel("active parameters (M)")
        ax.set_ylabel(rows[0]["primary"] + (" (lower is better)" if not rows[0]["higher_is_better"] else ""))
        ax.set_title(f"{suite}: metric vs active parameters")
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(_save(fig, Path(out_dir) / f"{suite}_vs_params.png"))
    return paths


def _save(fig, path) -> Path:
    from ..core.paths import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    _plt().close(fig)
    return path


def family_plans(lm, selector, width: int, prompts: dict[str, list[str]], progress=None) -> dict[str, list]:
    """Per-prompt plans for each family's prompts; `progress(1)` after each."""
    out: dict[str, list] = {}
    for fam, ps in prompts.items():
        for p in ps:
            out.setdefault(fam, []).append(selector.select(lm, p, width))
            if progress is not None:
                progress(1)
    return out
