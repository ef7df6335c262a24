"""Trained artifacts shipped inside the package (predictor head + LoRA adapter, bf16), one per keep.

`ifprune generate` / `serve` / `export` / `eval` use one when no selector or checkpoint is named
(`--selector auto`) and the loaded weights are the ones it was trained on, by their fingerprint, however the
model was named (no --model, a path to the same GGUF, an HF export of it): the one trained at the asked
--keep/--width when there is one, else the default. Each is only valid for the base weights it was
trained on, loaded in float32 (selection.artifact checks the fingerprint), so any other model or dtype
falls back to GRIFFIN, and the command says so.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_MODEL_ARTIFACT = HERE / "smollm2-135m-keep75"  # the default by measured quality (results/training/v3)


def shipped_artifacts() -> list[tuple[Path, dict]]:
    """(directory, config) of every artifact in the package."""
    return [(d, json.loads((d / "config.json").read_text())) for d in sorted(HERE.iterdir())
            if (d / "config.json").is_file()]


def artifact_for_weights(fingerprint: str, *, keep: float | None = None, width: int | None = None) -> Path | None:
    """The shipped artifact trained on the weights with this fingerprint (LoadedModel.fingerprint: what the model
    is, however it was named or loaded): the one trained at `keep`/`width` if there is one, else the default;
    None when no shipped artifact was trained on these weights (another model, or another dtype)."""
    return _at_keep([(p, c) for p, c in shipped_artifacts() if c.get("base_fingerprint") == fingerprint], keep, width)


def _at_keep(artifacts: list[tuple[Path, dict]], keep: float | None, width: int | None) -> Path | None:
    """Of `artifacts`, the one trained at `keep`/`width` when they are given, else the default (None: not among
    them, or a bad --keep, which is reported where the width is resolved)."""
    if keep is not None or width is not None:
        from ..core.plan import width_from_keep

        for path, cfg in artifacts:
            try:
                if width_from_keep(keep, width, int(cfg["d_ffn"])) == int(cfg["width"]):
                    return path
            except Exception:  # noqa: BLE001 - a bad --keep is reported where the width is resolved
                return None
    return DEFAULT_MODEL_ARTIFACT if any(path == DEFAULT_MODEL_ARTIFACT for path, _ in artifacts) else None


def auto_selection(lm, *, keep: float | None = None, width: int | None = None) -> tuple[str, str | None, str]:
    """`--selector auto` on a loaded model: (selector, artifact or None, why), by the weights' fingerprint."""
    import torch

    path = artifact_for_weights(lm.fingerprint(), keep=keep, width=width)
    if path is not None:
        return "predictor", str(path), f"the shipped artifact {path.name} was trained on these weights"
    dtype = next(lm.model.parameters()).dtype
    why = "no shipped artifact was trained on these weights"
    if dtype != torch.float32:
        why += f" in {str(dtype).removeprefix('torch.')} (the shipped ones need the packaged model in float32)"
    return "griffin", None, why


def default_selection(model: str | None, dtype: str = "float32", *, keep: float | None = None,
                      width: int | None = None) -> tuple[str, str | None]:
    """Every command's selector when none is named: ("predictor", the shipped artifact) on the
    packaged model in float32, else ("griffin", None)."""
    shipped = packaged_artifact(model, dtype, keep=keep, width=width)
    return ("predictor", str(shipped)) if shipped is not None else ("griffin", None)


def packaged_artifact(model: str | None, dtype: str = "float32", *, keep: float | None = None,
                      width: int | None = None) -> Path | None:
    """The shipped artifact for `model` (None = the packaged default model) in `dtype`: the one trained
    at `keep`/`width` if there is one, else the default; None for any other model or dtype."""
    if model is not None or dtype not in ("float32", "fp32", "auto"):  # (auto: float32 for the packaged GGUF)
        return None
    return _at_keep(shipped_artifacts(), keep, width)
