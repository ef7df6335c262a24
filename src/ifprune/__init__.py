"""ifprune: instruction-following pruning of Hugging Face causal LMs.

The data path reads top to bottom: `load_model` -> a selector's `select` -> `Plan` ->
`CompactModel.load` -> `generate`. `MaskedFFN` is the differentiable twin of the compact model.
"""

__version__ = "0.1.0"

from .errors import IfpruneError  # noqa: E402

__all__ = ["IfpruneError", "__version__"]
