"""Re-selection after the first tokens of the answer ("refresh").

A prompt says little about which channels the answer will need: on the shipped keep-3/4 artifact,
masks from GRIFFIN over the prompt *and* the answer take code from 1.21x to 1.06x dense on the same
weights, while the prompt alone cannot (benchmarks/oracle_masks.py). Once R answer tokens exist they
can be read: the refreshed plan keeps each layer's top channels of the selector's own scores plus
GRIFFIN's over the prompt and those R tokens (each standardised per layer, so neither scale wins by
size), computed in one forward of the full model over the tokens so far. Generation then continues
from a fresh prefill under the new plan: still one smaller dense model at a time, with one extra
selection and prefill per answer.

Off by default, except for an artifact trained under re-selection (recipe `refresh: R`, e.g. the
shipped keep-3/4 one): it runs with `refresh R` unless told `refresh 0` (`resolve_refresh`).
"""

from __future__ import annotations

import torch

from ..core.errors import IfpruneError
from ..core.plan import Plan
from .heads import standardise
from .selectors import GriffinSelector, Selector


def check_refresh(refresh: int | None) -> int | None:
    """None or 0: off; else the number of answer tokens before re-selection."""
    if refresh is None or refresh == 0:
        return None
    if isinstance(refresh, bool) or not isinstance(refresh, int) or refresh < 0:
        raise IfpruneError(f"refresh must be a whole number of tokens >= 1 (0 or none: off), got {refresh!r}")
    return refresh


def default_refresh(selector) -> int | None:
    """The selector's own default: an artifact trained under re-selection (recipe `refresh`) runs with it."""
    art = getattr(selector, "artifact", None)
    return art.refresh if art is not None else None


def resolve_refresh(refresh: int | None, selector) -> int | None:
    """What runs: None takes the selector's default (`default_refresh`), 0 turns re-selection off."""
    return default_refresh(selector) if refresh is None else check_refresh(refresh)


def combine(own: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """The re-selection rule (inference and training share it): each score set standardised per layer, summed."""
    return standardise(own.float()) + standardise(seen.float())


def refresh_scores(lm, selector: Selector, text: str | None, ids: torch.Tensor) -> torch.Tensor:
    """[layers, d_ffn]: `combine` of the selector's scores of `text` and GRIFFIN's over `ids`."""
    if ids.dim() == 2:
        if ids.shape[0] != 1:
            raise IfpruneError("refresh re-selects one sequence at a time")
        ids = ids[0]
    own = selector.cached_scores(lm, text if selector.per_prompt else None)
    seen = GriffinSelector.scores_from_ids(lm, ids.unsqueeze(0).to(lm.device))
    return combine(own.cpu(), seen.cpu())


def refresh_plan(lm, selector: Selector, text: str | None, ids: torch.Tensor, width: int, after: int) -> Plan:
    """The plan for the rest of an answer whose first `after` tokens end `ids` (prompt + answer so far)."""
    meta = {"selector": selector.name, **selector.options(), "model": lm.fingerprint(),
            "refresh": {"after": after, "tokens": int(ids.shape[-1])}}
    return Plan.from_scores(refresh_scores(lm, selector, text, ids), width, meta)

