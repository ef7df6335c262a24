"""Trained artifacts shipped inside the package (predictor head + LoRA adapter, bf16).

`ifprune generate` / `serve` / `export` use the one for the packaged default model when no selector
or checkpoint is named. It is only valid for the base weights it was trained on, loaded in float32
(selection.artifact checks the fingerprint), so any other model or dtype falls back to GRIFFIN.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL_ARTIFACT = Path(__file__).resolve().parent / "smollm2-135m-keep50"


def packaged_artifact(model: str | None, dtype: str = "float32") -> Path | None:
    """The shipped artifact for `model` (None = the packaged default model) in `dtype`, if there is one."""
    if model is not None or dtype not in ("float32", "fp32"):
        return None
    return DEFAULT_MODEL_ARTIFACT if (DEFAULT_MODEL_ARTIFACT / "config.json").is_file() else None
