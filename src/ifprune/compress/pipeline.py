"""Compression pipeline (2:4 pruning, then weight-only quantization), its on-disk format, and plans on
compressed models (scored by eval's scorer, like every other model: eval.scorer.text_nll, the suites).

On disk (`save_compressed`), a directory in the compressed-tensors format that llm-compressor writes
and transformers (with the `compressed-tensors` package) and vLLM read, without ifprune:
- `config.json` with a `quantization_config` (quant_method compressed-tensors, format
  pack-quantized: int8 per output row, strategy channel; int4 group-wise, strategy group; symmetric,
  weight-only) written by compressed-tensors' `ModelCompressor`; tokenizer files;
- `model.safetensors`: quantized linears as `weight_packed` / `weight_scale` / `weight_shape`, every
  other tensor as it is. 2:4 weights are stored with their zeros (compressed-tensors >= 0.15 has no
  sparse storage format any more; the 2:4 pattern is recorded in ifprune's manifest);
- `ifprune/`: what only ifprune uses, in a subdirectory so that loaders globbing `*.safetensors` do not
  see it: `compress.json` (recipe, tensor specs, the sha256 of every weight file, so a corrupted or
  mismatched file is refused) and `compress.safetensors` (the FFN activation norms that re-impose 2:4
  on down after a plan, and with policy "regather" the dense down weights, quantized like the rest).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..core.errors import IfpruneError
from ..core.paths import atomic_path, file_sha256
from .quant import INT4_GROUPS, SCHEMES, QuantizedWeight, encode, quantize, quantize_linears
from .sparsity import (
    DOWN_POLICIES, METHODS, down_names, impose_down_2_4, pattern_report, prunable_linears, prune_2_4,
    sparsify_compact,
)

FORMAT = "ifprune-compress/2"  # 2: compressed-tensors weights; ifprune's extras under ifprune/
MANIFEST = "ifprune/compress.json"
EXTRA = "ifprune/compress.safetensors"


@dataclass
class CompressConfig:
    """A recipe. `sparsity` None or "2:4"; `quant` None, "int8" or "int4" (group-wise)."""

    sparsity: str | None = "2:4"
    method: str = "sparsegpt"
    down: str = "regather"
    quant: str | None = None
    group_size: int = 64
    calibration: str | None = None
    calib_tokens: int = 4096
    seq_len: int = 256
    # LoRA recovery fine-tuning between pruning and quantization (0 steps = none); see recovery.py
    recover_steps: int = 0
    recover_data: str | None = None
    recover_lr: float = 2e-4
    recover_rank: int = 16
    recover_mode: str = "masked"
    recover_batch_size: int = 4
    recover_seq_len: int = 256

    def recovery(self):
        from .recovery import RecoveryConfig

        return RecoveryConfig(data=self.recover_data, steps=self.recover_steps, lr=self.recover_lr,
                              rank=self.recover_rank, alpha=2.0 * self.recover_rank, mode=self.recover_mode,
                              batch_size=self.recover_batch_size, seq_len=self.recover_seq_len)

    def validate(self) -> "CompressConfig":
        if self.sparsity not in (None, "2:4"):
            raise IfpruneError(f"unsupported sparsity {self.sparsity!r}: use 2:4 (or none)")
        if self.method not in METHODS:
            raise IfpruneError(f"unknown pruning method {self.method!r}; choose from {', '.join(METHODS)}")
        if self.down not in DOWN_POLICIES:
            raise IfpruneError(f"unknown down policy {self.down!r}; choose from {', '.join(DOWN_POLICIES)}")
        if self.quant not in (None, *SCHEMES):
            raise IfpruneError(f"unknown quantization {self.quant!r}; choose from none, {', '.join(SCHEMES)}")
        if self.quant == "int4" and self.group_size not in INT4_GROUPS:
            raise IfpruneError(f"int4 group size {self.group_size} is not supported; use one of {INT4_GROUPS}")
        if self.sparsity is None and self.quant is None:
            raise IfpruneError("nothing to do: give --sparsity 2:4 and/or --quant int8|int4")
        if self.sparsity and not self.calibration:
            raise IfpruneError("2:4 pruning needs calibration text: pass --calibration FILE "
                               "(e.g. ../shared/data/pretrain/llamafactory/c4_demo.jsonl)")
        if self.sparsity and not Path(self.calibration).is_file():
            raise IfpruneError(f"calibration file not found: {self.calibration}")
        if self.recover_steps < 0:
            raise IfpruneError(f"recover steps must be >= 0, got {self.recover_steps}")
        if self.recover_steps:
            if not self.sparsity:
                raise IfpruneError("recovery fine-tuning is for 2:4-pruned models: add --sparsity 2:4 or drop "
                                   "--recover-steps")
            self.recovery().validate()
        return self


@dataclass
class Compressed:
    """What a compressed model carries beyond its (dense-format) weights."""

    config: CompressConfig
    linears: list[str]
    down_names: list[str]
    act_norm: torch.Tensor | None = None
    down_dense: list[torch.Tensor] | None = None
    qweights: dict[str, QuantizedWeight] = field(default_factory=dict)
    recovery: dict | None = None  # what recovery fine-tuning did (steps, tokens, losses), if it ran

    def compact(self, lm, plan):
        """The compact model of `plan`, with down made 2:4 again when the model is 2:4."""
        compact = lm.compact(plan.width)
        compact.plan = None  # always re-gather: the buffers may hold another recipe's down
        compact.load(plan)
        if self.config.sparsity:
            sparsify_compact(compact, plan, self.act_norm, self.down_dense)
        return compact

    def pattern(self, model) -> dict:
        return pattern_report(model, self.linears)


def _all_linears(lm) -> list[str]:
    return [n for block in prunable_linears(lm.model, lm.layout) for n, _ in block]


@torch.no_grad()
def compress(lm, config: CompressConfig, progress=None) -> Compressed:
    """Compress `lm.model` in place: 2:4 prune (sequentially, with calibration), then quantize."""
    cfg = config.validate()
    linears = _all_linears(lm)
    dnames = down_names(lm.model, lm.layout)
    comp = Compressed(cfg, linears, dnames)
    if cfg.sparsity:
        res = prune_2_4(lm, cfg.calibration, method=cfg.method, down=cfg.down, tokens=cfg.calib_tokens,
                        seq_len=cfg.seq_len, progress=progress)
        comp.act_norm, comp.down_dense = res.act_norm, res.down_dense
    if cfg.recover_steps:
        from .recovery import recover

        with torch.enable_grad():
            comp.recovery = recover(lm, comp, cfg.recovery(), progress=progress is not None)
    if cfg.quant:
        rest = [n for n in linears if not (comp.down_dense is not None and n in dnames)]
        comp.qweights = quantize_linears(lm.model, rest, cfg.quant, cfg.group_size)
        if comp.down_dense is not None:  # quantize the dense down; the model holds its 2:4 part
            for i, n in enumerate(dnames):
                qw = quantize(comp.down_dense[i], cfg.quant, cfg.group_size, name=n)
                comp.qweights[n] = qw
                _set_down(lm.model.get_submodule(n).weight, qw.dequantize(), comp, i)
    return comp


def _set_down(weight: torch.Tensor, dense: torch.Tensor, comp: Compressed, i: int) -> None:
    dense = dense.to(weight.device, weight.dtype)
    comp.down_dense[i] = dense
    weight.copy_(dense * impose_down_2_4(dense, comp.act_norm[i]))


# --- on disk ------------------------------------------------------------------------------------
def save_compressed(lm, comp: Compressed, out: str | Path, overwrite: bool = False) -> dict:
    """Write the directory described in the module docstring, atomically. Returns the manifest."""
    from safetensors.torch import save_file

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise IfpruneError(f"{out} exists and is not empty: pass --overwrite or choose another --out")
    extra: dict[str, torch.Tensor] = {}
    if comp.act_norm is not None:
        extra["ffn_act_norm"] = comp.act_norm.float().contiguous()
    regather = comp.down_dense is not None
    for n, qw in comp.qweights.items():
        if regather and n in comp.down_names:  # the dense down (the model holds its 2:4 part)
            extra.update(qw.tensors(n))
    if regather and not comp.qweights:
        for n, w in zip(comp.down_names, comp.down_dense):
            extra[f"{n}.dense"] = w.detach().cpu().contiguous()
    with atomic_path(out) as tmp:
        tmp.mkdir()
        if comp.qweights:
            _save_compressed_tensors(lm.model, comp, tmp)
        else:
            lm.model.save_pretrained(tmp)
        lm.tokenizer.save_pretrained(tmp)
        (tmp / EXTRA).parent.mkdir()
        save_file(extra or {"empty": torch.zeros(1)}, str(tmp / EXTRA), metadata={"format": FORMAT})
        weights = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*.safetensors"))
        manifest = {
            "format": FORMAT,
            "config": asdict(comp.config),
            "model_class": type(lm.model).__name__,
            "d_ffn": lm.d_ffn,
            "num_layers": lm.num_layers,
            "linears": comp.linears,
            "down_names": comp.down_names,
            "quantized": {n: qw.spec() for n, qw in comp.qweights.items()},
            "recovery": comp.recovery,
            "sha256": {name: file_sha256(tmp / name) for name in weights + ["config.json"]},
            "bytes": {name: (tmp / name).stat().st_size for name in weights},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _save_compressed_tensors(model, comp: Compressed, out: Path) -> None:
    """The quantized linears in compressed-tensors' pack-quantized format, with ifprune's own scales
    (so the stored codes are exactly ifprune's, and every loader dequantizes to ifprune's weights).
    Works on a copy: compressing replaces the modules' weights."""
    import copy

    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (
        QuantizationArgs, QuantizationConfig, QuantizationScheme, QuantizationStatus, apply_quantization_config,
    )

    model = copy.deepcopy(model)
    groups = {}
    for n, qw in comp.qweights.items():  # one config group per (bits, group size)
        groups.setdefault((qw.bits, qw.group_size if qw.bits == 4 else None), []).append(n)
    config = QuantizationConfig(config_groups={
        f"group_{i}": QuantizationScheme(targets=sorted(names), weights=QuantizationArgs(
            num_bits=bits, type="int", symmetric=True, strategy="group" if gs else "channel", group_size=gs))
        for i, ((bits, gs), names) in enumerate(sorted(groups.items(), key=str))},
        ignore=[], quantization_status=QuantizationStatus.FROZEN)
    apply_quantization_config(model, config)
    for n, qw in comp.qweights.items():
        m = model.get_submodule(n)
        m.weight_scale.data.copy_(qw.scales.reshape(m.weight_scale.shape).to(m.weight_scale.dtype))
        if hasattr(m, "weight_zero_point"):
            m.weight_zero_point.data.zero_()
    compressor = ModelCompressor.from_pretrained_model(model, quantization_format="pack-quantized")
    compressor.compress_model(model)
    model.save_pretrained(out)
    compressor.update_config(str(out))


def read_manifest(path: str | Path) -> dict:
    path = Path(path)
    mf = path / MANIFEST
    if not mf.is_file():
        old = (path / "ifprune-compress.json").is_file()
        raise IfpruneError(f"{path} was written by an older ifprune (format 1); compress the model again" if old else
                           f"{path} is not an ifprune compressed model (no {MANIFEST}); create one with ifprune compress")
    try:
        manifest = json.loads(mf.read_text())
    except json.JSONDecodeError as e:
        raise IfpruneError(f"{mf} is not valid JSON ({e.msg}): the directory is corrupted") from None
    if manifest.get("format") != FORMAT:
        raise IfpruneError(f"{mf} has format {manifest.get('format')!r}; this ifprune reads {FORMAT}")
    return manifest


@torch.no_grad()
def load_compressed(path: str | Path, *, dtype: str = "float32", device: str = "cpu", verify: bool = True):
    """(LoadedModel, Compressed) from a `save_compressed` directory; checksums and shapes verified.
    The model is what transformers + compressed-tensors load (dequantized); ifprune's extras give the
    integer codes back (from the stored scales) and what plans need to keep 2:4."""
    from safetensors import safe_open

    from ..core.loading import LoadedModel, _dtype, _from_pretrained

    path = Path(path)
    manifest = read_manifest(path)
    for name, digest in manifest.get("sha256", {}).items():
        f = path / name
        if not f.is_file():
            raise IfpruneError(f"{f} is missing: the compressed model is incomplete; re-run ifprune compress")
        if verify and file_sha256(f) != digest:
            raise IfpruneError(f"{f} does not match its checksum in {MANIFEST}: the file is corrupted or was "
                               "replaced; re-run ifprune compress")
    try:
        cfg = CompressConfig(**manifest["config"])
    except TypeError as e:
        raise IfpruneError(f"{MANIFEST} has an unknown recipe ({e}); re-run ifprune compress") from None
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        model, tok = _from_pretrained(str(path), _dtype(dtype), local_only=True)
    finally:
        hf_logging.enable_progress_bar()
    if type(model).__name__ != manifest["model_class"]:
        raise IfpruneError(f"{path} holds a {type(model).__name__}, its manifest says {manifest['model_class']}")
    lm_ = LoadedModel(model.to(device).eval(), tok, str(path))
    if tok.pad_token_id is None and tok.eos_token_id is not None:
        tok.pad_token = tok.eos_token
    if (lm_.d_ffn, lm_.num_layers) != (manifest["d_ffn"], manifest["num_layers"]):
        raise IfpruneError(f"{path}: model has {lm_.num_layers} layers x {lm_.d_ffn} FFN channels, manifest "
                           f"{manifest['num_layers']} x {manifest['d_ffn']}: mismatched files")
    with safe_open(str(path / EXTRA), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    comp = Compressed(cfg, manifest["linears"], manifest["down_names"])
    if cfg.sparsity:
        if "ffn_act_norm" not in tensors or tuple(tensors["ffn_act_norm"].shape) != (lm_.num_layers, lm_.d_ffn):
            raise IfpruneError(f"{EXTRA} lacks ffn_act_norm [{lm_.num_layers}, {lm_.d_ffn}]: mismatched files")
        comp.act_norm = tensors["ffn_act_norm"].float()
        if cfg.down == "regather":
            comp.down_dense = [None] * lm_.num_layers
    if manifest["quantized"]:
        with safe_open(str(path / "model.safetensors"), "pt") as f:
            keys = set(f.keys())
            scales = {n: f.get_tensor(f"{n}.weight_scale") for n in manifest["quantized"] if f"{n}.weight_scale" in keys}
    for n, spec in manifest["quantized"].items():
        try:
            w = model.get_submodule(n).weight
        except AttributeError:
            raise IfpruneError(f"quantized layer {n} does not exist in {manifest['model_class']}: mismatched files") from None
        if comp.down_dense is not None and n in comp.down_names:
            qw = QuantizedWeight.from_tensors(n, spec, tensors)
        else:  # the codes of what the loader dequantized, under the stored scales
            if n not in scales:
                raise IfpruneError(f"model.safetensors lacks {n}.weight_scale: mismatched files; re-run ifprune compress")
            qw = _requantize(n, spec, w, scales[n])
        if tuple(w.shape) != qw.shape:
            raise IfpruneError(f"{n}: quantized shape {qw.shape} != model shape {tuple(w.shape)}: mismatched files")
        comp.qweights[n] = qw
        if comp.down_dense is not None and n in comp.down_names:
            _set_down(w, qw.dequantize(), comp, comp.down_names.index(n))
    if comp.down_dense is not None and not comp.qweights:
        for i, n in enumerate(comp.down_names):
            key = f"{n}.dense"
            w = model.get_submodule(n).weight
            if key not in tensors or tensors[key].shape != w.shape:
                raise IfpruneError(f"{EXTRA} lacks {key} with shape {tuple(w.shape)}: mismatched files")
            comp.down_dense[i] = tensors[key].to(w.device, w.dtype)
    return lm_, comp


def _requantize(name: str, spec: dict, weight: torch.Tensor, scale: torch.Tensor) -> QuantizedWeight:
    """A QuantizedWeight from a dequantized weight and its scale: the codes are exact (w = q * s)."""
    try:
        bits, group, (out, inp) = int(spec["bits"]), int(spec["group_size"]), spec["shape"]
    except (KeyError, TypeError, ValueError) as e:
        raise IfpruneError(f"quantized tensor {name} has a malformed spec ({e!r}): re-run ifprune compress") from None
    if tuple(weight.shape) != (out, inp) or group < 1 or inp % group or scale.numel() != out * (inp // group):
        raise IfpruneError(f"quantized tensor {name} does not match its manifest (weight {tuple(weight.shape)}, "
                           f"scale {tuple(scale.shape)}; manifest {(out, inp)}, group {group}): mismatched files")
    if not torch.isfinite(scale).all():
        raise IfpruneError(f"quantized tensor {name} has non-finite scales: the file is corrupted")
    return encode(weight, scale.float().reshape(out, inp // group), bits)


def packed_bytes(comp: Compressed, model, value_bits: int = 16) -> dict:
    """What the linears would take in a packed deployment format: 2:4 stores half the values plus 2
    bits of position per kept value (NVIDIA's metadata); quantized values take their bit width
    plus one fp16 scale per group. Dense fp16 is the reference."""
    dense = packed = 0
    for n in comp.linears:
        w = model.get_submodule(n).weight
        numel = w.numel()
        dense += numel * value_bits / 8
        bits = comp.qweights[n].bits if n in comp.qweights else value_bits
        kept = numel / 2 if comp.config.sparsity else numel
        meta = kept * 2 if comp.config.sparsity else 0
        scales = (numel / comp.qweights[n].group_size * 16) if n in comp.qweights else 0
        packed += (kept * bits + meta + scales) / 8
    return {"linear_bytes_dense_fp16": int(dense), "linear_bytes_packed": int(packed),
            "ratio": packed / dense if dense else math.nan}
