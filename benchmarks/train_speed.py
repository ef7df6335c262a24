"""Training throughput on this machine: tokens/s of the joint loop (stage 2, the default model, keep
1/2) under each speed setting, same batch size and data, plus the loss of the same batches in
float32 vs bf16 autocast (the accuracy check). Writes JSON + markdown.

    python benchmarks/train_speed.py --threads 2 --steps 6 --out results/training/speed

The "full head" rows run the LM head over every position (the loop before loss-position logits),
by swapping `loop.loss_logits` for that computation; every other row runs the loop as shipped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

VARIANTS = [  # name, overrides, full LM head
    ("fp32, full head (before)", {"bf16": False}, True),
    ("fp32, loss-position head", {"bf16": False}, False),
    ("fp32, loss-position head, length-grouped", {"bf16": False, "data.group_by_length": True}, False),
    ("same, full fine-tuning", {"bf16": False, "data.group_by_length": True, "llm": "full"}, False),
    ("same, LoRA, 1 thread", {"bf16": False, "data.group_by_length": True, "threads": 1}, False),
    ("bf16 autocast, loss-position head, length-grouped", {"bf16": True, "data.group_by_length": True}, False),
]


def matmul_ms(dtype, threads: int) -> dict:
    """One FFN-shaped matmul forward and its two backward products, ms (why bf16 helps or not here)."""
    torch.set_num_threads(threads)
    a, w, g = (torch.randn(*s, dtype=dtype) for s in ((512, 576), (1536, 576), (512, 1536)))
    out = {}
    for name, f in (("x@W^T", lambda: a @ w.t()), ("g@W", lambda: g @ w), ("g^T@x", lambda: g.t() @ a)):
        f()
        t0 = time.perf_counter()
        for _ in range(5):
            f()
        out[name] = (time.perf_counter() - t0) / 5 * 1000
    return out


def full_head_logits(model, ids, att, labels):
    from ifprune.training.loop import LossLogits

    on = labels[:, 1:] != -100
    logits = model(input_ids=ids, attention_mask=att).logits[:, :-1][on]
    return LossLogits(logits, labels[:, 1:][on], on.nonzero()[:, 0], ids.shape[0])


def run_variant(base: dict, overrides: dict, full_head: bool, steps: int, threads: int) -> dict:
    from ifprune.training import loop
    from ifprune.training.config import config_from_dict

    obj = json.loads(json.dumps(base))
    threads = overrides.get("threads", threads)
    for k, v in overrides.items():
        if k == "threads":
            continue
        node = obj
        *parents, leaf = k.split(".")
        for q in parents:
            node = node.setdefault(q, {})
        node[leaf] = v
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        obj["output_dir"] = tmp
        cfg = config_from_dict(obj)
        original = loop.loss_logits
        if full_head:
            loop.loss_logits = full_head_logits
        try:
            trainer = loop.Trainer(cfg)
            trainer.run()
        finally:
            loop.loss_logits = original
        log = [json.loads(x) for x in (Path(tmp) / "log.jsonl").read_text().splitlines()]
    # step 1 is warm-up (allocator, autocast caches): throughput from steps 2..N
    toks = log[-1]["tokens"] - log[0]["tokens"]
    secs = log[-1]["elapsed_s"] - log[0]["elapsed_s"]
    return {"threads": threads, "overrides": overrides, "full_head": full_head, "steps": len(log),
            "tokens_per_s": toks / secs, "tokens": toks, "seconds": secs,
            "step_s": [b["elapsed_s"] - a["elapsed_s"] for a, b in zip(log, log[1:])],
            "losses": [r["loss"] for r in log]}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=6)
    a = p.parse_args()
    base = {"stage": "sft", "method": "predictor", "keep": 0.5, "llm": "lora", "lora_r": 8, "steps": a.steps,
            "batch_size": 4, "warmup_steps": 1, "prior": "griffin", "prior_prompts": 8, "checkpoint_every": 1000,
            "progress": False, "lr_llm": 5e-4, "lr_predictor": 5e-4,
            "data": {"max_seq_len": 160, "max_prompt_tokens": 128}}
    from ifprune.core.precision import cpu_has_fast_bf16

    fast_bf16 = cpu_has_fast_bf16()
    mm = {"float32": matmul_ms(torch.float32, a.threads), "bfloat16": matmul_ms(torch.bfloat16, a.threads)}
    rows, skipped = [], []
    for name, overrides, full_head in VARIANTS:
        if overrides.get("bf16") and not fast_bf16:
            skipped.append({"name": name, "why": "this CPU has no native bf16 (AVX-512 BF16 / AMX): the loop trains "
                            "in float32 here (see matmul_ms for the emulated bf16 cost)"})
            continue
        t0 = time.perf_counter()
        r = run_variant(base, overrides, full_head, a.steps, a.threads)
        r["name"] = name
        r["wall_s"] = time.perf_counter() - t0
        rows.append(r)
        print(f"{name:45s} {r['tokens_per_s']:7.1f} tok/s  losses {[round(x, 3) for x in r['losses']]}", flush=True)
    check = None
    by = {r["name"]: r for r in rows}
    if fast_bf16:
        fp32 = by["fp32, loss-position head, length-grouped"]["losses"]
        bf16 = by["bf16 autocast, loss-position head, length-grouped"]["losses"]
        check = {"fp32_losses": fp32, "bf16_losses": bf16, "max_abs_diff": max(abs(x - y) for x, y in zip(fp32, bf16)),
                 "note": "same batches, same initial weights; loss per step"}
    head = (by["fp32, full head (before)"]["losses"], by["fp32, loss-position head"]["losses"])
    head_check = {"full_head": head[0], "loss_position_head": head[1],
                  "max_abs_diff": max(abs(x - y) for x, y in zip(*head))}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cpu_name = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                     if ln.startswith("model name")), platform.processor() or platform.machine())
    meta = {"machine": cpu_name, "cpus": os.cpu_count(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "native_bf16": fast_bf16, "matmul_ms": mm, "torch": torch.__version__, "base_config": base, "command": "python benchmarks/train_speed.py "
            f"--threads {a.threads} --steps {a.steps} --out {a.out}"}
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows, "skipped": skipped, "bf16_check": check,
                                                    "head_check": head_check}, indent=1) + "\n")
    lines = ["| setting | threads | tokens/s | x before | step s (median) |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['threads']} | {r['tokens_per_s']:.1f} | "
                     f"{r['tokens_per_s'] / rows[0]['tokens_per_s']:.2f} | {statistics.median(r['step_s']):.2f} |")
    lines += [f"| {r['name']} | - | skipped | - | {r['why']} |" for r in skipped]
    lines += ["", f"Machine: {cpu_name}, {os.cpu_count()} CPUs, torch {torch.__version__} (CPU capability "
              f"{meta['cpu_capability']}, native bf16: {fast_bf16}). FFN-shaped matmul ms (forward, two backward "
              "products): " + "; ".join(f"{k} " + ", ".join(f"{n} {v:.1f}" for n, v in d.items()) for k, d in mm.items()),
              "", f"Loss-position head vs full head, same batches: max |loss diff| {head_check['max_abs_diff']:.2e}."]
    if check:
        lines.append(f"bf16 vs fp32 loss on the same {len(check['fp32_losses'])} batches: max |diff| "
                     f"{check['max_abs_diff']:.4f}.")
    lines += ["", f"Command: `{meta['command']}`; batch 4, max 160 tokens, LoRA r=8 unless stated, keep 1/2, "
              "predictor, stage 2 data; throughput over steps 2..N (real, unpadded tokens)."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
