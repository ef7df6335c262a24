"""The compact model: a stock Hugging Face model of the full model's class whose config says
`intermediate_size = k`. Every non-FFN tensor *is* the full model's tensor (shared, not copied);
the FFN tensors are buffers allocated once and refilled in place by gathering a plan's channels,
so switching plans allocates nothing and the decode loop is an ordinary dense model's.
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn

from .errors import IfpruneError
from .ffn import FFNLayout, discover
from .plan import Plan, check_width


def _text_config(cfg):
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


def _set_width(config, attr: str, width: int):
    cfg = copy.deepcopy(config)
    setattr(_text_config(cfg), attr, width)
    return cfg


def _write_down(down: nn.Module, W_s: torch.Tensor | None, b_s: torch.Tensor | None, shared_bias) -> None:
    """One layer's refit over its gathered down projection: W'_S (None: the gathered weights stand) and b' (None:
    the bias stays as it is). A bias the module lacks, or shares (`shared_bias`, the full model's), becomes a
    parameter of its own."""
    from .ffn import Conv1D

    from .quantized import Int8Linear

    if W_s is not None and isinstance(down, Int8Linear):  # only what the refit rewrote is quantized again
        down.set_weight(W_s)
    elif W_s is not None:
        down.weight.copy_(W_s.T if isinstance(down, Conv1D) else W_s)
    if b_s is None:
        return
    if down.bias is None or down.bias is shared_bias:
        down._parameters["bias"] = nn.Parameter(b_s.detach().clone(), requires_grad=False)
    else:
        down.bias.copy_(b_s)


def _share_meta_attrs(compact: nn.Module, full: nn.Module) -> None:
    """Plain tensor attributes created on the meta device (e.g. rotary `original_inv_freq`)."""
    for name, mod in compact.named_modules():
        src = full.get_submodule(name)
        for attr, val in list(vars(mod).items()):
            if isinstance(val, torch.Tensor) and val.is_meta:
                setattr(mod, attr, getattr(src, attr))


def _gather(src: torch.Tensor, dim: int, rows: torch.Tensor, out: torch.Tensor) -> None:
    """`out` = `src`'s slices `rows` along `dim`. An int8 down projection's columns on the CPU go through numpy,
    whose byte gather along the inner dimension is several times faster than torch's there."""
    if dim == 1 and src.dtype == torch.int8 and src.device.type == "cpu" and out.is_contiguous():
        import numpy as np

        np.take(src.numpy(), rows.numpy(), axis=1, out=out.numpy())
    else:
        torch.index_select(src, dim, rows, out=out)


class CompactModel:
    """Holds the k-wide model built from `full`; `load(plan)` gathers a plan's channels into it."""

    def __init__(self, full: nn.Module, width: int, layout: FFNLayout | None = None, compensator=None,
                 quantized=None):
        """`quantized`: the full model's quantized.QuantizedWeights; the compact model then runs int8 linears
        whose FFN rows and columns each plan gathers from it (None: the full model's own tensors)."""
        self.full = full
        self.quant = "int8" if quantized is not None else None
        self.layout = layout or discover(full)
        self.width = check_width(width, self.layout.d_ffn)
        self.plan: Plan | None = None
        self._slots: torch.Tensor | None = None  # [layers, width]: the full channel in each slot (load(reuse=True))
        self.compensator = compensator  # calibration.Compensator: refit the down projection on load
        self._loaded_key = None
        fam = self.layout.family

        cfg = _set_width(full.config, fam.width_attr, self.width)
        with torch.device("meta"):
            model = type(full)(cfg)
        ffn_names = self.layout.ffn_param_names(full)
        full_params = dict(full.named_parameters(remove_duplicate=False))
        for name, p in model.named_parameters(remove_duplicate=False):
            owner, attr = name.rsplit(".", 1)
            mod = model.get_submodule(owner)
            src = full_params[name]
            if name in ffn_names:  # (int8: a placeholder of the shape, never allocated, replaced below)
                mod._parameters[attr] = nn.Parameter(
                    torch.empty(p.shape, dtype=src.dtype, device="meta" if quantized is not None else src.device),
                    requires_grad=False)
            else:
                if p.shape != src.shape:
                    raise IfpruneError(f"compact model tensor {name} has shape {tuple(p.shape)}, full {tuple(src.shape)}")
                mod._parameters[attr] = src
        full_buffers = dict(full.named_buffers(remove_duplicate=False))
        for name, _ in model.named_buffers(remove_duplicate=False):
            owner, attr = name.rsplit(".", 1)
            model.get_submodule(owner)._buffers[attr] = full_buffers[name]
        _share_meta_attrs(model, full)
        model.generation_config = copy.deepcopy(full.generation_config)
        model.train(full.training)
        self.model = model

        # pair each full channel tensor with its compact buffer, and check the width took effect
        clayout = discover(model)
        self._pairs = []
        for fl, cl in zip(self.layout.layers, clayout.layers):
            pairs = []
            for fct, cct in zip(fl.channel_tensors(), cl.channel_tensors()):
                expect = self.width * (2 if fct.fused else 1)
                if cct.tensor.shape[cct.dim] != expect:
                    raise IfpruneError(
                        f"setting config.{fam.width_attr}={self.width} did not resize {cl.name}; "
                        "this model's FFN width is set by another config field"
                    )
                pairs.append((fct, cct.tensor))
            self._pairs.append(pairs)
        if quantized is not None:
            from .quantized import int8_compact

            self._pairs = int8_compact(model, clayout, self.layout, quantized, self.width)
            self._down_scales = [q["down"][1] for q in quantized.ffn]
            clayout = discover(model)
        self.compact_layout = clayout

    def load(self, plan: Plan, prompt=None, reuse: bool = False) -> float:
        """Gather `plan`'s channels into the pre-allocated buffers and, with a compensator, write the
        refit down projection over the gathered one; returns seconds (0 if already loaded).
        `prompt`: the prompt's own activation moments (compensation mode "prompt").
        `reuse`: move only the channels the loaded plan lacks, into the slots of those it drops (a re-selected
        plan shares most of its channels with the last one). The compact FFN then holds the plan's channels in
        another order than `plan.indices` (its output does not depend on it: a sum over channels); callers that
        read the buffers in plan order (a refit, 2:4 sparsification) leave it off, and a compensator turns it off."""
        if plan.width != self.width or plan.d_ffn != self.layout.d_ffn or plan.num_layers != self.layout.num_layers:
            raise IfpruneError(
                f"plan is {plan.num_layers} layers x {plan.width}/{plan.d_ffn} channels; this compact model "
                f"holds {self.layout.num_layers} layers x {self.width}/{self.layout.d_ffn}"
            )
        comp = self.compensator
        key = (plan.hash, getattr(prompt, "key", None) if comp is not None and comp.config.mode == "prompt" else None)
        if self.plan is not None and self._loaded_key == key:
            return 0.0
        t0 = time.perf_counter()
        device = next(self.model.parameters()).device
        idx = plan.indices.to(device, non_blocking=True)
        d = self.layout.d_ffn
        with torch.no_grad():
            if reuse and comp is None and self.plan is not None and self._slots is not None:
                self._move_changed(idx)
            else:
                for layer_pairs, rows in zip(self._pairs, idx):
                    for fct, buf in layer_pairs:
                        _gather(fct.tensor, fct.dim, fct.rows_for(rows, d), buf)
                self._slots = idx.clone()
            if comp is not None and self.quant is not None:  # a refit of the last plan may have rewritten them
                for cl, scale in zip(self.compact_layout.layers, self._down_scales):
                    cl.down.scale.copy_(scale)
            if comp is not None and not plan.is_dense:
                self._write_refit(comp.refit(plan, prompt))
            else:
                self._restore_bias()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        self.plan = plan
        self._loaded_key = key
        return time.perf_counter() - t0

    def channels(self) -> torch.Tensor:
        """[layers, width]: the full model's channel in each slot of the FFN buffers (the loaded plan's indices, in
        the order `load(reuse=True)` left them), so an activation the compact model computes can be put back."""
        if self._slots is None:
            raise IfpruneError("internal: no plan is loaded into this compact model")
        return self._slots.detach().cpu().clone()

    def _move_changed(self, idx: torch.Tensor) -> None:
        """`load(reuse=True)`: per layer, the channels of `idx` not in the buffers go into the slots of those not in
        `idx`; `_slots` tracks which full channel each slot holds."""
        d = self.layout.d_ffn
        for layer_pairs, rows, slots in zip(self._pairs, idx, self._slots):
            free = (~torch.isin(slots, rows)).nonzero().squeeze(1)
            if not free.numel():
                continue
            add = rows[~torch.isin(rows, slots)]
            for fct, buf in layer_pairs:
                buf.index_copy_(fct.dim, fct.rows_for(free, self.width),
                                fct.tensor.index_select(fct.dim, fct.rows_for(add, d)))
            slots[free] = add

    def _write_refit(self, refits) -> None:
        """Write each layer's refit (W'_S or None: the gathered weights stand; b' or None) over the gathered
        down projection. A bias the architecture lacks (mode "mean" on Llama) becomes a parameter of its own."""
        for fl, cl, (W_s, b_s) in zip(self.layout.layers, self.compact_layout.layers, refits):
            _write_down(cl.down, W_s, b_s, fl.down.bias)
            if b_s is None:
                self._restore_bias(fl, cl)

    def _restore_bias(self, *pair) -> None:
        """The full model's own down bias (shared, or none) where a refit wrote one: a plan loaded without a
        refit must not keep the previous plan's."""
        for fl, cl in [pair] if pair else zip(self.layout.layers, self.compact_layout.layers):
            if cl.down.bias is not fl.down.bias:
                cl.down._parameters["bias"] = fl.down.bias

    def refresh(self) -> None:
        """Re-gather after the full model's FFN weights changed (e.g. a training step)."""
        if self.quant is not None:  # its rows come from a quantized copy of the weights as they were
            raise IfpruneError("an int8 compact model gathers from the weights quantized once: after changing them, "
                               "call lm.weights_changed() and take a new lm.compact(width)")
        plan, self.plan, self._loaded_key = self.plan, None, None
        if plan is not None:
            self.load(plan)

    def ffn_bytes(self) -> int:
        return sum(buf.numel() * buf.element_size() for pairs in self._pairs for _, buf in pairs)


def shrink(lm, plan: Plan) -> nn.Module:
    """Turn `lm`'s own model into the compact model of `plan`, in place and a layer at a time: each full FFN
    tensor is released as its gathered copy replaces it, and the compensator's refit (computed first, from the full
    weights) is written over the gathered down projection. No second model is built beside the first, and weights
    that were allocated (not memory-mapped from the checkpoint file) are returned as it goes. `lm` is consumed: it
    runs this plan only (its compact(), fingerprint and compensation refuse to run on it afterwards)."""
    lm.check_whole()
    plan.check_shape(lm)
    layout = lm.layout
    refits = lm.compensator.refit(plan) if lm.compensator is not None and not plan.is_dense else None
    d = layout.d_ffn
    with torch.no_grad():
        for i, layer in enumerate(layout.layers):
            rows = plan.indices[i].to(torch.long)
            for ct in layer.channel_tensors():
                full = getattr(ct.module, ct.attr)
                kept = torch.index_select(full.detach(), ct.dim, ct.rows_for(rows, d).to(full.device))
                ct.module._parameters[ct.attr] = nn.Parameter(kept, requires_grad=False)
                del full
            if refits is not None:  # (the full model's own bias is replaced, not written into)
                _write_down(layer.down, *refits[i], shared_bias=layer.down.bias)
    setattr(_text_config(lm.model.config), layout.family.width_attr, plan.width)
    lm.consumed_by = plan
    return lm.model
