"""Accuracy of dense / 2:4 / int8 / int4 / 2:4+int4 / 2:4 + LoRA recovery, each also under a static plan
(wanda or magnitude) at keep 1/2, on the default model. NLL on held-out *training* text (GSM8K-train and
Alpaca tails), multiple choice on ARC-easy (icl_eval). Writes accuracy_<plan>.json/.md to results/compression/.

    IFPRUNE_CACHE=/tmp/ifpc HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/compression_accuracy.py --plan wanda
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch

from ifprune.compress.pipeline import CompressConfig, compress, packed_bytes
from ifprune.core.errors import IfpruneError
from ifprune.core.loading import load_model
from ifprune.core.paths import write_json, write_text
from ifprune.core.plan import width_from_keep
from ifprune.selection.selectors import MagnitudeSelector, WandaSelector
from ifprune.compress.sparsity import is_2_4

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "results" / "compression"  # where its results live
DATA = Path(os.environ.get("IFPRUNE_DATA", ROOT.parent / "shared" / "data"))

VARIANTS = [  # name, recipe (None = dense)
    ("dense", None),
    ("2:4 sparsegpt", dict(sparsity="2:4", method="sparsegpt")),
    ("2:4 sparsegpt down-reprune", dict(sparsity="2:4", method="sparsegpt", down="reprune")),
    ("2:4 wanda", dict(sparsity="2:4", method="wanda")),
    ("int8", dict(sparsity=None, quant="int8")),
    ("int4 g64", dict(sparsity=None, quant="int4", group_size=64)),
    ("2:4 sparsegpt + int4 g64", dict(sparsity="2:4", method="sparsegpt", quant="int4", group_size=64)),
    ("2:4 sparsegpt + int8", dict(sparsity="2:4", method="sparsegpt", quant="int8")),
    # LoRA recovery on a text disjoint from calibration and evaluation (wiki_demo.txt); steps set by --recover-steps
    ("2:4 sparsegpt + recovery", dict(sparsity="2:4", method="sparsegpt", recover_mode="masked")),
    ("2:4 sparsegpt + recovery (peft; masked at merge)", dict(sparsity="2:4", method="sparsegpt", recover_mode="peft")),
    ("2:4 sparsegpt + recovery + int4 g64", dict(sparsity="2:4", method="sparsegpt", recover_mode="masked",
                                                 quant="int4", group_size=64)),
]


# The scorer these results were measured with, kept here (its only user) so that they re-run to the same numbers;
# the package itself scores with eval's scorer (eval.scorer.text_nll, the nll and mc suites).
@torch.no_grad()
def nll_per_token(model, tokenizer, texts: list[str], max_len: int = 512) -> dict:
    """Mean negative log-likelihood per predicted token over `texts` (one sequence each)."""
    total, count = 0.0, 0
    device = next(model.parameters()).device
    for t in texts:
        ids = tokenizer(t, return_tensors="pt")["input_ids"][:, :max_len].to(device)
        if ids.shape[1] < 2:
            continue
        logits = model(ids).logits[0, :-1].float()
        total += float(torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum"))
        count += ids.shape[1] - 1
    if count == 0:
        raise IfpruneError("no text to score: every text encodes to fewer than 2 tokens")
    return {"nll": total / count, "ppl": math.exp(total / count), "tokens": count, "texts": len(texts)}


@torch.no_grad()
def mc_accuracy(model, tokenizer, items: list[dict]) -> dict:
    """Multiple choice by log-likelihood of each choice after the query ("acc": summed log-prob,
    "acc_norm": per character). Items: {"query", "choices", "gold"} (llm-foundry icl_eval format)."""
    device = next(model.parameters()).device
    right = right_norm = 0
    for it in items:
        ctx = tokenizer(it["query"] + "\nAnswer:", return_tensors="pt")["input_ids"][0]
        scores, norms = [], []
        for ch in it["choices"]:
            cont = tokenizer(" " + ch, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
            ids = torch.cat([ctx, cont]).unsqueeze(0).to(device)
            logp = model(ids).logits[0, len(ctx) - 1:-1].float().log_softmax(-1)
            s = float(logp.gather(1, cont.to(device).unsqueeze(1)).sum())
            scores.append(s)
            norms.append(s / max(len(ch), 1))
        right += int(max(range(len(scores)), key=scores.__getitem__) == it["gold"])
        right_norm += int(max(range(len(norms)), key=norms.__getitem__) == it["gold"])
    n = max(len(items), 1)
    return {"acc": right / n, "acc_norm": right_norm / n, "n": len(items)}


def heldout_texts(data_dir: str | Path, n_each: int = 50) -> list[str]:
    """The last `n_each` GSM8K-train and Alpaca examples: training data, never test splits."""
    data_dir = Path(data_dir)
    gsm = data_dir / "gsm8k" / "train.jsonl"
    alp = data_dir / "instruct" / "alpaca" / "alpaca_5000.json"
    for f in (gsm, alp):
        if not f.is_file():
            raise IfpruneError(f"{f} not found: set IFPRUNE_DATA to the shared data folder")
    rows = [json.loads(line) for line in gsm.read_text().splitlines() if line.strip()][-n_each:]
    texts = [f"Question: {r['question']}\nAnswer: {r['answer']}" for r in rows]
    for r in json.loads(alp.read_text())[-n_each:]:
        prompt = r["instruction"] + (f"\n\n{r['input']}" if r.get("input") else "")
        texts.append(f"{prompt}\n\n{r['output']}")
    return texts


def mc_items(path: str | Path, limit: int = 100) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise IfpruneError(f"{path} not found: set IFPRUNE_DATA to the shared data folder")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()][:limit]


def evaluate(model, tok, texts, items):
    return {**nll_per_token(model, tok, texts), **{f"mc_{k}": v for k, v in mc_accuracy(model, tok, items).items()}}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--calibration", default=str(DATA / "pretrain" / "llamafactory" / "c4_demo.jsonl"))
    ap.add_argument("--calib-tokens", type=int, default=4096)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--nll-each", type=int, default=50)
    ap.add_argument("--mc-limit", type=int, default=100)
    ap.add_argument("--keep", type=float, default=0.5)
    ap.add_argument("--plan", default="wanda", choices=["wanda", "magnitude"],
                    help="static plan applied to every variant (wanda: calibrated on --calibration)")
    ap.add_argument("--recover-data", default=str(DATA / "pretrain" / "llamafactory" / "wiki_demo.txt"))
    ap.add_argument("--recover-steps", type=int, default=100)
    ap.add_argument("--recover-lr", type=float, default=2e-4)
    ap.add_argument("--recover-batch-size", type=int, default=4)
    ap.add_argument("--recover-seq-len", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", default=None, help="comma-separated variant names (default: all)")
    ap.add_argument("--out", default=str(HERE))
    ap.add_argument("--rows", default=None,
                    help="one JSON row per finished variant (default rows_<plan>.jsonl); rows already there are "
                         "kept, not re-run")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    texts = heldout_texts(DATA, args.nll_each)
    items = mc_items(DATA / "icl_eval" / "world_knowledge" / "arc_easy.jsonl", args.mc_limit)
    dense_lm = load_model()
    width = width_from_keep(args.keep, None, dense_lm.d_ffn)
    if args.plan == "wanda":
        plan = WandaSelector(calibration=args.calibration).select(dense_lm, None, width)
    else:
        plan = MagnitudeSelector().select(dense_lm, None, width)
    rows_path = Path(args.rows or HERE / f"rows_{args.plan}.jsonl")
    rows = [json.loads(x) for x in rows_path.read_text().splitlines() if x.strip()] if rows_path.is_file() else []
    done = {r["variant"] for r in rows}
    wanted = set(args.only.split(",")) if args.only else None
    for name, recipe in VARIANTS:
        if (wanted and name not in wanted) or name in done:
            continue
        lm = load_model()
        t0 = time.perf_counter()
        row = {"variant": name, "recipe": recipe}
        if recipe is None:
            comp = None
        else:
            if "recover_mode" in recipe:
                recipe = {**recipe, "recover_steps": args.recover_steps, "recover_data": args.recover_data,
                          "recover_lr": args.recover_lr, "recover_batch_size": args.recover_batch_size,
                          "recover_seq_len": args.recover_seq_len}
                row["recipe"] = recipe
            comp = compress(lm, CompressConfig(**recipe, calibration=args.calibration,
                                               calib_tokens=args.calib_tokens, seq_len=args.seq_len))
            if comp.recovery:
                row["recovery"] = comp.recovery
            row["compress_s"] = round(time.perf_counter() - t0, 1)
            row["full_pattern"] = {k: v for k, v in comp.pattern(lm.model).items() if k != "not_2_4"}
            row["packed"] = packed_bytes(comp, lm.model)
        row["full"] = evaluate(lm.model, lm.tokenizer, texts, items)
        if comp is None:
            compact = lm.compact(width)
            compact.load(plan)
        else:
            compact = comp.compact(lm, plan)
        row["plan"] = evaluate(compact.model, lm.tokenizer, texts, items)
        downs = [layer.down.weight for layer in compact.compact_layout.layers]
        row["plan_down_all_2_4"] = all(is_2_4(w) for w in downs)
        row["plan_down_density"] = sum(int((w != 0).sum()) for w in downs) / sum(w.numel() for w in downs)
        if recipe is not None and recipe.get("down") == "reprune":
            # reference: the gathered, pruned down columns left as they are (pattern broken)
            compact.plan = None
            compact.load(plan)
            row["plan_broken_pattern"] = evaluate(compact.model, lm.tokenizer, texts, items)
        row["total_s"] = round(time.perf_counter() - t0, 1)
        print(json.dumps(row), file=sys.stderr, flush=True)
        rows.append(row)
        with open(rows_path, "a") as f:  # one line per finished variant: a crash keeps what was done
            f.write(json.dumps(row) + "\n")
    rec = CompressConfig(recover_data=args.recover_data).recovery()
    meta = {
        "platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
        "threads": args.threads, "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": "IFPRUNE_CACHE=/tmp/ifpc HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/compression_accuracy.py "
                   + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": dense_lm.source, "plan": {"selector": args.plan, "keep": args.keep, "width": width,
                                             "d_ffn": dense_lm.d_ffn, "hash": plan.hash},
        "nll_data": f"last {args.nll_each} of gsm8k/train.jsonl + last {args.nll_each} of alpaca_5000.json",
        "mc_data": f"icl_eval/world_knowledge/arc_easy.jsonl, first {args.mc_limit}",
        "calibration": f"{Path(args.calibration).name}, {args.calib_tokens} tokens in chunks of {args.seq_len}",
        "recovery": f"{Path(args.recover_data).name}, {args.recover_steps} steps x {args.recover_batch_size} x "
                    f"{args.recover_seq_len} tokens, lr {args.recover_lr}, LoRA r={rec.rank} alpha={rec.alpha:g} on every "
                    "pruned linear",
    }
    out = Path(args.out)
    write_json(out / f"accuracy_{args.plan}.json", {"meta": meta, "rows": rows})
    write_text(out / f"accuracy_{args.plan}.md", table(meta, rows))


def table(meta, rows) -> str:
    lines = [
        "# Compression accuracy on the default model (CPU)", "",
        f"- rows: `rows_{meta['plan']['selector']}.jsonl` (one per variant, appended as each finishes; earlier rows may come from an earlier invocation of the same script)",
        f"- machine: {meta['platform']}, {meta['cpus']} CPUs, torch {meta['torch']}, {meta['threads']} threads, {meta['date']}",
        f"- command: `{meta['command']}`",
        f"- NLL: {meta['nll_data']} (training data, held out from nothing we tuned); MC: {meta['mc_data']}",
        f"- plan: {meta['plan']['selector']} at keep {meta['plan']['keep']} ({meta['plan']['width']}/{meta['plan']['d_ffn']} channels), "
        "computed once on the dense model and applied to every variant",
        f"- calibration: {meta['calibration']}",
        *([f"- recovery: {meta['recovery']}; recovery seconds per row in the JSON"] if "recovery" in meta else []),
        "- packed = linear-layer bytes in a packed format (2:4: half the values + 2 bits index each; int: bits + fp16 "
        "scale per group) relative to dense fp16; computed, not a file size",
        "- no speed was measured: this session had no GPU; on CPU the 2:4 model runs as a dense model with zeros", "",
        "| variant | NLL full | ARC-e acc full | NLL plan k=1/2 | ARC-e acc plan | down 2:4 after plan | down density after plan | packed/fp16 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    order = [name for name, _ in VARIANTS]
    for r in sorted(rows, key=lambda r: order.index(r["variant"]) if r["variant"] in order else 99):
        packed = f"{r['packed']['ratio']:.3f}" if "packed" in r else "1.000"
        lines.append(
            f"| {r['variant']} | {r['full']['nll']:.4f} | {r['full']['mc_acc']:.2f} | {r['plan']['nll']:.4f} | "
            f"{r['plan']['mc_acc']:.2f} | {r['plan_down_all_2_4']} | {r['plan_down_density']:.3f} | {packed} |")
        if "plan_broken_pattern" in r:
            b = r["plan_broken_pattern"]
            lines.append(f"| {r['variant']}: gathered down left as is (not 2:4) | | | {b['nll']:.4f} | {b['mc_acc']:.2f} | False | | |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
