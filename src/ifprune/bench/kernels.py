"""How fast each weight format ifprune writes actually runs: dense, 2:4 (PyTorch semi-structured
sparse tensors), int8 and int4 weight-only (QuantLinear's kernels), for every linear of one decoder
block of a model shape, at the full FFN width and at a plan's compact width.

Kernel level on purpose: it isolates the matmul, which is all a weight format changes, and needs only
shapes (the model is built on the meta device, so the Llama-3.1-8B shape costs no memory here).
Decode is batch x 1 token, prefill batch x prompt tokens. Every timed path is first checked against
its dense-emulated reference, and a path with no kernel on this device is reported as unavailable
with the reason, never timed as a silent dense fallback.
"""

from __future__ import annotations

import platform
import statistics
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from .latency import device_name
from ..runtime.fastdecode import sync_device
from ..core.errors import IfpruneError
from ..core.plan import width_from_keep
from ..compress.quant import INT4_GROUPS, QuantLinear, quantize
from ..compress.sparsity import mask_2_4, to_semi_structured

FORMATS = ("dense", "2:4", "int8", "int4")


@dataclass
class KernelBenchConfig:
    prompt_tokens: int = 4096
    batches: tuple[int, ...] = (1, 16)
    formats: tuple[str, ...] = FORMATS
    keep: float | None = 0.25
    width: int | None = None
    group_size: int = 128
    budget_s: float = 0.3  # timing per measurement (at least `min_reps` repetitions)
    min_reps: int = 3
    seed: int = 0

    @classmethod
    def for_device(cls, device: str, **overrides) -> "KernelBenchConfig":
        """The paper's 4k prompt on a GPU; 32 prompt tokens on CPU, where a 16 x 4k prefill of the 8B
        shape's linears would take hours."""
        base = cls() if str(device).startswith("cuda") else cls(prompt_tokens=32)
        for k, v in overrides.items():
            if v is not None:
                setattr(base, k, v)
        return base

    def validate(self) -> None:
        if self.prompt_tokens < 1 or not self.batches or min(self.batches) < 1:
            raise IfpruneError("prompt tokens and every batch size must be >= 1")
        bad = [f for f in self.formats if f not in FORMATS]
        if bad or not self.formats:
            raise IfpruneError(f"unknown format(s) {bad}: choose from {', '.join(FORMATS)}")
        if self.budget_s <= 0 or self.min_reps < 1:
            raise IfpruneError("budget_s must be > 0 and min_reps >= 1")


@dataclass
class LinearShape:
    name: str  # e.g. "self_attn.q_proj", "mlp.down_proj (compact)"
    in_features: int
    out_features: int
    part: str  # "attention", "ffn" or "ffn-compact"


def block_shapes(config, width: int) -> tuple[list[LinearShape], int, int]:
    """Shapes of one decoder block's linears (found by module, on the meta device), the FFN ones
    again at the compact width; also (number of layers, d_ffn)."""
    from transformers import AutoModelForCausalLM

    from ..core.ffn import discover
    from ..compress.sparsity import prunable_linears

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    layout = discover(model)
    ffn = {id(m) for m in (*layout.layers[0].up, layout.layers[0].down)}
    shapes, compact = [], []
    for qual, mod in prunable_linears(model, layout)[0]:
        name = qual.split(".", 3)[-1] if qual.count(".") >= 3 else qual
        part = "ffn" if id(mod) in ffn else "attention"
        shapes.append(LinearShape(name, mod.in_features, mod.out_features, part))
        if part == "ffn":
            is_down = mod is layout.layers[0].down
            compact.append(LinearShape(f"{name} (compact)", width if is_down else mod.in_features,
                                       mod.out_features if is_down else width, "ffn-compact"))
    return shapes + compact, layout.num_layers, layout.d_ffn


def time_call(fn, device: torch.device, budget_s: float, min_reps: int) -> tuple[float, int]:
    """Median seconds per call and repetitions; on CUDA each repetition is 10 calls between syncs,
    so launch latency is amortised the way a captured decode step amortises it."""
    inner = 10 if device.type == "cuda" else 1
    for _ in range(2):
        fn()
    sync_device(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_reps or (time.perf_counter() - start < budget_s and len(times) < 200):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        sync_device(device)
        times.append((time.perf_counter() - t0) / inner)
    return statistics.median(times), len(times)


def _weight(shape: LinearShape, dtype, device, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape.out_features, shape.in_features, generator=g) / shape.in_features ** 0.5).to(device, dtype)


def _prepare(fmt: str, w: torch.Tensor, group_size: int):
    """(call(x), reference weight, stored bytes, kernel name) or raises IfpruneError with the reason."""
    if fmt == "dense":
        return (lambda x: F.linear(x, w)), w, w.numel() * w.element_size(), "dense"
    if fmt == "2:4":
        w24 = w * mask_2_4(w.abs())
        holder = torch.nn.Module()
        holder.linear = torch.nn.Linear(w.shape[1], w.shape[0], bias=False, device="meta")
        holder.linear.weight = torch.nn.Parameter(w24, requires_grad=False)
        to_semi_structured(holder, ["linear"])  # raises (CPU, dtype, shape) rather than running dense
        ws = holder.linear.weight
        stored = sum(t.numel() * t.element_size() for t in (getattr(ws, a, None) for a in
                     ("packed", "meta", "packed_t", "meta_t")) if isinstance(t, torch.Tensor))
        return (lambda x: F.linear(x, ws)), w24, stored, f"semi-structured ({type(ws).__name__})"
    if fmt == "int4":
        group_size = int4_group(w.shape[1], group_size)
    qw = quantize(w, fmt, group_size).to(w.device)
    lin = QuantLinear(qw, None)
    if lin.kernel == "dequant":
        raise IfpruneError(f"no {fmt} kernel on {w.device.type} (dequantizing every call is not a format "
                           f"anyone would run): {lin.kernel_note}")
    name = lin.kernel if fmt == "int8" else f"{lin.kernel} g{group_size}"
    return lin, qw.dequantize(w.dtype).to(w.device), qw.nbytes(), name


def _measure(call, ref_w: torch.Tensor, x: torch.Tensor, dev: torch.device, cfg: KernelBenchConfig):
    """(seconds per call, repetitions, max error relative to the reference output's max)."""
    with torch.inference_mode():
        want = F.linear(x.float(), ref_w.float())
        err = float((call(x).float() - want).abs().max() / want.abs().max().clamp_min(1e-12))
        sec, reps = time_call(lambda: call(x), dev, cfg.budget_s, cfg.min_reps)
    return sec, reps, err


def int4_group(in_features: int, wanted: int) -> int:
    """`wanted` if it divides the input width, else the largest supported group size that does."""
    for g in (wanted, *sorted((g for g in INT4_GROUPS if g < wanted), reverse=True), *INT4_GROUPS):
        if in_features % g == 0:
            return g
    raise IfpruneError(f"no int4 group size in {INT4_GROUPS} divides {in_features} inputs")


def run_kernel_bench(config, cfg: KernelBenchConfig, *, device: str = "cpu", dtype: torch.dtype = torch.float32,
                     source: str = "", progress=None) -> dict:
    """Time every (linear shape, format, phase, batch); returns a JSON-ready dict with raw rows."""
    cfg.validate()
    dev = torch.device(device)
    d_ffn = getattr(config.get_text_config(), "intermediate_size", None)
    if d_ffn is None:
        raise IfpruneError("this config has no intermediate_size: give a decoder-only causal LM config")
    width = width_from_keep(cfg.keep, cfg.width, d_ffn)
    shapes, num_layers, d_ffn = block_shapes(config, width)
    phases = [("decode", b, b) for b in cfg.batches] + [("prefill", b, b * cfg.prompt_tokens) for b in cfg.batches]
    rows, unavailable = [], {}
    tol = 1e-3 if dtype == torch.float32 else 3e-2  # vs the dense-emulated reference, relative to its max
    for si, shape in enumerate(shapes):
        w = _weight(shape, dtype, dev, cfg.seed + si)
        for fmt in cfg.formats:
            try:
                call, ref_w, stored, kernel = _prepare(fmt, w, cfg.group_size)
            except IfpruneError as e:
                unavailable.setdefault(fmt, str(e))
                continue
            for phase, batch, m in phases:
                x = torch.randn(m, shape.in_features, generator=torch.Generator().manual_seed(m)).to(dev, dtype)
                try:
                    sec, reps, err = _measure(call, ref_w, x, dev, cfg)
                except Exception as e:  # a kernel may refuse a shape (e.g. a 1-row input)
                    unavailable.setdefault(f"{fmt} {phase} b{batch}", f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
                    continue
                rows.append({"linear": shape.name, "part": shape.part, "in": shape.in_features,
                             "out": shape.out_features, "format": fmt, "kernel": kernel, "phase": phase,
                             "batch": batch, "tokens": m, "seconds": sec, "reps": reps, "weight_bytes": stored,
                             "weight_gb_per_s": stored / sec / 1e9, "max_rel_err": err, "ok": err <= tol})
                if progress is not None:
                    progress(f"{shape.name} {fmt} {phase} b{batch}: {sec * 1e6:.0f} us")
    return {
        "config": asdict(cfg), "device": str(dev), "device_name": device_name(dev),
        "dtype": str(dtype).replace("torch.", ""), "torch": torch.__version__, "platform": platform.platform(),
        "threads": torch.get_num_threads() if dev.type == "cpu" else None, "source": source,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "num_layers": num_layers, "d_ffn": d_ffn, "width": width,
        "rows": rows, "unavailable": unavailable, "summary": summarise(rows, cfg.formats, num_layers),
    }


def summarise(rows: list[dict], formats, num_layers: int) -> dict:
    """Per phase/batch/format: one block's linear time (full-width FFN; and with the compact FFN),
    x num_layers for the model, and the speed-up over dense on the same shapes. A format with any
    linear missing is left out (its sum would look faster than it is)."""
    out: dict = {}
    every = {r["linear"] for r in rows}
    for key in sorted({(r["phase"], r["batch"]) for r in rows}, key=lambda k: (k[0] != "decode", k[1])):
        sel = [r for r in rows if (r["phase"], r["batch"]) == key]
        entry = {}
        for fmt in formats:
            rs = {r["linear"]: r for r in sel if r["format"] == fmt}
            if set(rs) != every:
                continue
            full = sum(r["seconds"] for r in rs.values() if r["part"] in ("attention", "ffn"))
            comp = sum(r["seconds"] for r in rs.values() if r["part"] in ("attention", "ffn-compact"))
            entry[fmt] = {"block_s": full, "block_compact_s": comp, "model_s": full * num_layers,
                          "model_compact_s": comp * num_layers,
                          "max_rel_err": max(r["max_rel_err"] for r in rs.values()),
                          "all_ok": all(r["ok"] for r in rs.values()), "linears": len(rs)}
        dense = entry.get("dense")
        for fmt, e in entry.items():
            if dense:
                e["speedup"] = dense["block_s"] / e["block_s"]
                e["speedup_compact"] = dense["block_s"] / e["block_compact_s"]
        out[f"{key[0]} b{key[1]}"] = entry
    return out


def to_markdown(res: dict, command: str | None = None) -> str:
    cfg = res["config"]
    ms = lambda v: f"{v * 1e3:.2f}"  # noqa: E731
    lines = [f"# Linear-layer speed by weight format: {res['source']} on {res['device_name']} ({res['dtype']})", "",
             f"One decoder block's linears (attention + FFN), x{res['num_layers']} layers; FFN at full width "
             f"{res['d_ffn']} and at the plan's width {res['width']}. Decode = batch x 1 token, prefill = batch x "
             f"{cfg['prompt_tokens']} tokens. Median per call; speed-up = dense full-width time / this time.", "",
             "| phase | format | kernel | model ms (full FFN) | speed-up | model ms (plan width) | speed-up | max rel. err |",
             "|---|---|---|---|---|---|---|---|"]
    kernels: dict[str, set] = {}
    for r in res["rows"]:
        kernels.setdefault(r["format"], set()).add(r["kernel"])
    for key, entry in res["summary"].items():
        for fmt, e in entry.items():
            flag = "" if e["all_ok"] else " WRONG"
            lines.append(f"| {key} | {fmt} | {', '.join(sorted(kernels.get(fmt, [])))} | {ms(e['model_s'])} | {e.get('speedup', 0):.2f}x | "
                         f"{ms(e['model_compact_s'])} | {e.get('speedup_compact', 0):.2f}x | {e['max_rel_err']:.1e}{flag} |")
    lines.append("")
    for fmt, why in res["unavailable"].items():
        lines.append(f"- **{fmt}: not measured** - {why}")
    if "2:4" in cfg["formats"] and "2:4" not in res["unavailable"]:
        lines.append("- 2:4 + int4 has no kernel in PyTorch (it runs as int4 with stored zeros): not timed.")
    lines += [f"- machine: {res['platform']}, torch {res['torch']}, threads {res['threads']}, {res['date']}"]
    if command:
        lines.append(f"- command: `{command}`")
    return "\n".join(lines) + "\n"
