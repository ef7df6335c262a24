"""Recovery fine-tuning of a 2:4-pruned model with LoRA, merged without losing the pattern.

Two ways to keep the pattern, both here so they can be measured against each other:

- "masked" (default): the low-rank delta is multiplied by the 2:4 mask *in every forward*
  (W + M * (B A) * alpha/r, a `torch.nn.utils.parametrize` parametrization), so what the optimiser
  fits is exactly what gets merged, and the merge keeps the pattern by construction.
- "peft": stock peft LoRA (dense delta during training), masked only at merge
  (`sparsity.merge_lora_keep_2_4`). Cheaper to reason about, but the merged model is not the model
  that was trained: whatever the delta put into pruned slots is thrown away.

Runs after pruning and before quantization (`compress` orders it so): a delta added to quantized
weights would leave their grid.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..core.errors import IfpruneError

MODES = ("masked", "peft")


@dataclass
class RecoveryConfig:
    """LoRA recovery recipe; `data` is a local text/JSONL file (a different text from calibration is best)."""

    data: str
    steps: int = 100
    lr: float = 2e-4
    rank: int = 16
    alpha: float = 32.0
    batch_size: int = 4
    seq_len: int = 256
    warmup_steps: int = 10
    mode: str = "masked"
    seed: int = 0

    def validate(self) -> "RecoveryConfig":
        from pathlib import Path

        if self.mode not in MODES:
            raise IfpruneError(f"unknown recovery mode {self.mode!r}; choose from {', '.join(MODES)}")
        for name in ("steps", "rank", "batch_size"):
            if getattr(self, name) < 1:
                raise IfpruneError(f"recovery {name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise IfpruneError(f"recovery learning rate must be > 0, got {self.lr}")
        if self.seq_len < 8:
            raise IfpruneError(f"recovery seq_len must be >= 8, got {self.seq_len}")
        if not self.data or not Path(self.data).is_file():
            raise IfpruneError(f"recovery text not found: {self.data!r}; pass --recover-data FILE "
                               "(e.g. ../shared/data/pretrain/llamafactory/wiki_demo.txt)")
        return self


class MaskedLowRank(nn.Module):
    """Parametrization W -> W + M * (B A) * alpha/r. B starts at zero: training starts at the pruned model."""

    def __init__(self, mask: torch.Tensor, rank: int, alpha: float, generator: torch.Generator):
        super().__init__()
        out_f, in_f = mask.shape
        self.register_buffer("mask", mask)
        a = torch.randn(rank, in_f, generator=generator) / math.sqrt(in_f)
        self.A = nn.Parameter(a.to(mask.device))
        self.B = nn.Parameter(torch.zeros(out_f, rank, device=mask.device))
        self.scale = alpha / rank

    def delta(self) -> torch.Tensor:
        return self.mask * (self.B @ self.A) * self.scale

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w + self.delta().to(w.dtype)


def batches(tokenizer, path: str, steps: int, batch_size: int, seq_len: int) -> tuple[list[torch.Tensor], int]:
    """`steps` batches [batch_size, seq_len] of consecutive tokens from `path`, cycling the text if it is
    short; returns (batches, epochs over the text)."""
    from .sparsity import calibration_chunks

    chunks = torch.cat(calibration_chunks(tokenizer, path, tokens=steps * batch_size * seq_len, seq_len=seq_len))
    order = torch.arange(steps * batch_size) % len(chunks)
    epochs = math.ceil(steps * batch_size / len(chunks))
    return list(chunks[order].split(batch_size)), epochs


def _schedule(step: int, warmup: int, total: int) -> float:
    """Linear warm-up from 1/warmup (not from 0, unlike transformers' cosine schedule: with tens of steps
    a zero-LR first step is a real loss), then cosine to 0. results/compression was measured with it."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))


def recover(lm, comp, config: RecoveryConfig, progress: bool = False) -> dict:
    """Fine-tune `lm.model` (2:4-pruned by `comp`) with LoRA on `config.data`, merge in place keeping every
    pruned weight's non-zero positions, and keep `comp`'s dense down weights ("regather") consistent."""
    cfg = config.validate()
    if not comp.config.sparsity:
        raise IfpruneError("recovery fine-tuning is for 2:4-pruned models: add --sparsity 2:4")
    if comp.qweights:
        raise IfpruneError("recover before quantizing: a LoRA delta would move quantized weights off their grid "
                           "(compress runs prune -> recover -> quantize when given both)")
    model = lm.model
    device = next(model.parameters()).device
    names = comp.linears
    masks = {n: model.get_submodule(n).weight.detach() != 0 for n in names}
    data, epochs = batches(lm.tokenizer, cfg.data, cfg.steps, cfg.batch_size, cfg.seq_len)
    was_training = model.training
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    model.requires_grad_(False)
    gen = torch.Generator().manual_seed(cfg.seed)
    if cfg.mode == "masked":
        adapters = {}
        for n in names:
            mod = model.get_submodule(n)
            adapters[n] = MaskedLowRank(masks[n].to(mod.weight.dtype), cfg.rank, cfg.alpha, gen)
            parametrize.register_parametrization(mod, "weight", adapters[n])
        params = [p for a in adapters.values() for p in a.parameters()]
        net = model
    else:
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(cfg.seed)
        net = get_peft_model(model, LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=0.0,
                                               target_modules=names))
        params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, cfg.warmup_steps, cfg.steps))
    losses = []
    t0 = time.perf_counter()
    net.train()
    from tqdm.auto import tqdm

    bar = tqdm(total=cfg.steps, desc="recovery", unit="step", disable=not progress)
    try:
        for batch in data:
            batch = batch.to(device)
            loss = net(input_ids=batch, labels=batch).loss
            if not torch.isfinite(loss):
                raise IfpruneError(f"recovery loss became {float(loss)} at step {len(losses)}; lower --recover-lr")
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        if cfg.mode == "masked":
            deltas = {n: adapters[n].delta().detach() for n in names}
            for n in names:  # back to the original Parameter objects (shared with compact models)
                parametrize.remove_parametrizations(model.get_submodule(n), "weight", leave_parametrized=False)
        else:
            deltas = {n: net.base_model.model.get_submodule(n).get_delta_weight("default").detach() * masks[n]
                      for n in names}
            net.unload()  # drop the adapters unmerged
        for n in names:  # merge: the masked delta, in place
            w = model.get_submodule(n).weight
            w.add_(deltas[n].to(w.dtype))
        if comp.down_dense is not None:  # "regather": the dense down gets the same (masked) update
            for i, n in enumerate(comp.down_names):
                comp.down_dense[i] += deltas[n].to(comp.down_dense[i].device, comp.down_dense[i].dtype)
    for n, p in model.named_parameters():
        p.requires_grad_(flags.get(n, False))
    model.train(was_training)
    k = max(1, len(losses) // 10)
    return {"recipe": asdict(cfg), "steps": len(losses), "tokens": len(losses) * cfg.batch_size * cfg.seq_len,
            "epochs_over_text": epochs, "seconds": round(seconds, 1),
            "loss_first": sum(losses[:k]) / k, "loss_last": sum(losses[-k:]) / k}
