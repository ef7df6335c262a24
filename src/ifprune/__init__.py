"""ifprune: instruction-following pruning of Hugging Face causal LMs.

The data path reads top to bottom: `load_model` -> a selector's `select` -> `Plan` ->
`CompactModel.load` -> `generate`. `MaskedFFN` is the differentiable twin of the compact model.
Those names are importable from the package root (loaded on first use, so `import ifprune` stays
cheap); each lives in the package that owns it (see the README's code layout).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

from .core.errors import IfpruneError  # noqa: E402

_API = {
    "load_model": "core.loading", "LoadedModel": "core.loading", "Plan": "core.plan",
    "CompactModel": "core.compact", "MaskedFFN": "core.hooks", "make_selector": "selection.selectors",
    "compensate": "compensation.calibration", "CompensationConfig": "compensation.calibration",
    "generate": "runtime.generation", "SamplingConfig": "runtime.generation",
}

__all__ = ["IfpruneError", "__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module 'ifprune' has no attribute {name!r}")
