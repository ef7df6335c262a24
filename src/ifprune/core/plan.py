"""A plan: which FFN channels each layer keeps. Same width in every layer, so the pruned model is a
standard config; validated on construction, hashable (for caching loaded weights and per-task
plans) and saved as JSON or safetensors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from .errors import IfpruneError
from .paths import atomic_path


class Plan:
    __slots__ = ("indices", "d_ffn", "meta", "_hash")

    def __init__(self, indices: torch.Tensor | list[list[int]], d_ffn: int, meta: dict[str, Any] | None = None):
        try:
            raw = torch.as_tensor(indices).detach().cpu()
        except (TypeError, ValueError, RuntimeError) as e:
            raise IfpruneError(f"plan indices must be a [layers, width] array of integers ({e})") from None
        if raw.dtype == torch.bool or raw.is_complex():
            raise IfpruneError(f"plan indices must be integers, got {raw.dtype}")
        if raw.is_floating_point():
            if not bool(torch.isfinite(raw).all()) or not bool((raw == raw.round()).all()):
                raise IfpruneError("plan indices must be whole numbers: a fractional or non-finite index would be "
                                   "truncated to another channel")
        idx = raw.to(torch.long)
        if isinstance(d_ffn, bool) or not isinstance(d_ffn, int):
            raise IfpruneError(f"plan d_ffn must be an integer, got {d_ffn!r}")
        if meta is not None and not isinstance(meta, dict):
            raise IfpruneError(f"plan metadata must be a mapping, got {type(meta).__name__}")
        if idx.dim() != 2 or idx.shape[0] < 1:
            raise IfpruneError(f"a plan needs indices shaped [layers, width], got shape {tuple(idx.shape)}")
        if not 1 <= idx.shape[1] <= d_ffn:
            raise IfpruneError(f"plan width {idx.shape[1]} is outside 1..{d_ffn} (the FFN width)")
        if idx.min() < 0 or idx.max() >= d_ffn:
            raise IfpruneError(f"plan indices must lie in 0..{d_ffn - 1}, got {idx.min().item()}..{idx.max().item()}")
        if idx.shape[1] > 1 and not bool((idx[:, 1:] > idx[:, :-1]).all()):
            raise IfpruneError("plan indices must be sorted and unique within each layer")
        self.indices = idx.contiguous()
        self.d_ffn = int(d_ffn)
        self.meta = dict(meta or {})
        self._hash = hashlib.sha256(
            f"{self.d_ffn}:{tuple(idx.shape)}:".encode() + idx.to(torch.int32).numpy().tobytes()
        ).hexdigest()[:16]

    # construction ---------------------------------------------------------------------------
    @classmethod
    def from_scores(cls, scores: torch.Tensor, width: int, meta: dict[str, Any] | None = None) -> "Plan":
        """Hard top-k per layer of a [layers, d_ffn] score matrix (ties broken by lower index)."""
        if scores.dim() != 2:
            raise IfpruneError(f"scores must be [layers, d_ffn], got shape {tuple(scores.shape)}")
        d = scores.shape[1]
        check_width(width, d)
        s = scores.detach().float().cpu()
        s = torch.nan_to_num(s, nan=float("-inf"))
        # stable top-k: sort descending with stable order so equal scores keep the lower index
        order = torch.sort(s, dim=1, descending=True, stable=True).indices[:, :width]
        return cls(torch.sort(order, dim=1).values, d, meta)

    @classmethod
    def dense(cls, num_layers: int, d_ffn: int) -> "Plan":
        return cls(torch.arange(d_ffn).expand(num_layers, d_ffn), d_ffn, {"selector": "dense"})

    # views ----------------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return self.indices.shape[0]

    @property
    def width(self) -> int:
        return self.indices.shape[1]

    @property
    def hash(self) -> str:
        return self._hash

    @property
    def is_dense(self) -> bool:
        return self.width == self.d_ffn

    def to_mask(self, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
        mask = torch.zeros(self.num_layers, self.d_ffn, dtype=dtype, device=device)
        mask.scatter_(1, self.indices.to(mask.device), 1)
        return mask

    def overlap(self, other: "Plan") -> torch.Tensor:
        """Per-layer fraction of kept channels the two plans share."""
        a, b = self.to_mask(), other.to_mask()
        return (a * b).sum(1) / self.width

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Plan) and other._hash == self._hash

    def __hash__(self) -> int:
        return hash(self._hash)

    def __repr__(self) -> str:
        return f"Plan(layers={self.num_layers}, width={self.width}/{self.d_ffn}, hash={self._hash})"

    # serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"format": "ifprune-plan/1", "d_ffn": self.d_ffn, "width": self.width, "hash": self.hash,
                "meta": self.meta, "indices": self.indices.tolist()}

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> "Plan":
        if not isinstance(obj, dict):
            raise IfpruneError(f"malformed plan: expected a JSON object with 'indices' and 'd_ffn', got "
                               f"{type(obj).__name__}")
        d = obj.get("d_ffn")
        if isinstance(d, str) and d.isdigit():
            d = int(d)  # safetensors metadata holds strings
        rows = obj.get("indices")
        if isinstance(rows, list):  # a JSON file: integers only (the constructor takes whole-number floats from tensors)
            bad = next((i for r in rows if isinstance(r, list) for i in r
                        if not isinstance(i, int) or isinstance(i, bool)), None)
            if bad is not None:
                raise IfpruneError(f"malformed plan: indices must be integers (whole numbers written without a "
                                   f"decimal point, not true/false), found {bad!r}")
        try:
            plan = cls(obj["indices"], d, obj.get("meta"))
        except (KeyError, TypeError, ValueError) as e:
            raise IfpruneError(f"malformed plan: {e!r}; expected keys 'indices' and 'd_ffn'") from None
        if "hash" in obj and obj["hash"] != plan.hash:
            raise IfpruneError(f"plan hash mismatch ({obj['hash']} stored, {plan.hash} computed): the file was altered")
        return plan

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        with atomic_path(path) as tmp:
            if path.suffix == ".safetensors":
                from safetensors.torch import save_file

                save_file({"indices": self.indices.to(torch.int32)}, str(tmp),
                          metadata={"d_ffn": str(self.d_ffn), "hash": self.hash, "meta": json.dumps(self.meta)})
            else:
                tmp.write_text(json.dumps(self.to_dict()) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Plan":
        path = Path(path)
        if not path.is_file():
            raise IfpruneError(f"plan file not found: {path}")
        try:
            if path.suffix == ".safetensors":
                from safetensors import safe_open

                with safe_open(str(path), "pt") as f:
                    md = f.metadata() or {}
                    obj = {"indices": f.get_tensor("indices"), "d_ffn": md["d_ffn"], "hash": md.get("hash"),
                           "meta": json.loads(md.get("meta", "{}"))}
            else:
                obj = json.loads(path.read_text())
        except IfpruneError:
            raise
        except Exception as e:  # corrupt file of either kind
            raise IfpruneError(f"cannot read plan {path}: {e}") from None
        if isinstance(obj, dict) and obj.get("hash") is None:
            obj.pop("hash", None)
        return cls.from_dict(obj)

    def check_shape(self, lm, source: str = "plan") -> None:
        """Refuse a plan for another layer count or FFN width."""
        if self.num_layers != lm.num_layers or self.d_ffn != lm.d_ffn:
            raise IfpruneError(f"{source} is for {self.num_layers} layers x {self.d_ffn} channels; this model has "
                               f"{lm.num_layers} x {lm.d_ffn}: use a plan made for this model")

    def check_model(self, lm, source: str = "plan") -> None:
        """Refuse a plan made on other weights (same shape or not): its channels were chosen for them."""
        self.check_shape(lm, source)
        made_for = self.meta.get("model")
        if made_for is not None and made_for != lm.fingerprint():
            hint = (f"pass --checkpoint {self.meta['checkpoint']}: it was made by that artifact's tuned weights"
                    if self.meta.get("checkpoint") else "select again with this model")
            raise IfpruneError(f"{source} was made on model weights {made_for}; these are {lm.fingerprint()} "
                               f"({lm.source}): {hint}")


def check_width(width: int, d_ffn: int) -> int:
    if isinstance(width, bool) or not isinstance(width, int):
        raise IfpruneError(f"FFN width must be an integer, got {width!r}")
    if not 1 <= width <= d_ffn:
        raise IfpruneError(f"FFN width {width} is out of range: use 1..{d_ffn} (this model's FFN width)")
    return width


def width_from_keep(keep: float | None, width: int | None, d_ffn: int) -> int:
    """Resolve `--keep R` / `--width K` into a width; R in (0, 1] rounds to the nearest channel (>= 1)."""
    if keep is not None and width is not None:
        raise IfpruneError("give either keep (a fraction) or width (a channel count), not both")
    if width is not None:
        return check_width(width, d_ffn)
    if keep is None:
        return d_ffn
    if not (0 < keep <= 1):
        raise IfpruneError(f"keep ratio {keep} is out of range: use a fraction in (0, 1], e.g. 0.5")
    return max(1, min(d_ffn, round(keep * d_ffn)))
