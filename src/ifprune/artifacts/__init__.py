"""Trained artifacts shipped inside the package (predictor head + LoRA adapter, bf16), one per keep.

`ifprune generate` / `serve` / `export` / `eval` use one for the packaged default model when no selector
or checkpoint is named: the one trained at the asked --keep/--width when there is one, else the
default (chosen by measured quality: results/training/v3/summary.md). Each is only valid for the base
weights it was trained on, loaded in float32 (selection.artifact checks the fingerprint), so any
other model or dtype falls back to GRIFFIN.
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
    if keep is not None or width is not None:
        from ..core.plan import width_from_keep

        for path, cfg in shipped_artifacts():
            try:
                if width_from_keep(keep, width, int(cfg["d_ffn"])) == int(cfg["width"]):
                    return path
            except Exception:  # noqa: BLE001 - a bad --keep is reported where the width is resolved
                return None
    return DEFAULT_MODEL_ARTIFACT if (DEFAULT_MODEL_ARTIFACT / "config.json").is_file() else None
