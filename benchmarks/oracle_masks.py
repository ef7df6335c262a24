"""Is the selector or the pruned model the limit? Validation NLL of a trained artifact under masks from
its own predictor against masks from GRIFFIN scores of the whole example, prompt and response (an
oracle: it sees the answer), with and without the artifact's masks upstream, against its tuned weights
with every channel and the base model dense. The first N held-out examples per family of a training
config's split.

    python benchmarks/oracle_masks.py --config configs/smollm2-keep75-v5-sft-cpu.yaml \
        --artifact results/training/artifacts/smollm2-135m-keep75-v5 --per-family 8 --threads 2 \
        --out results/training/v6/oracle_masks_v5.json

Rows:
- predictor: the artifact's masks (what inference runs, no compensation);
- oracle_in_training: GRIFFIN over every token of the example read at each down projection *before*
  the predictor's mask in the predictor-masked forward (what `oracle_weight` trains the head towards);
- oracle_response_in_training: the same over the response tokens only (the first, rejected target:
  it leaves out the first tokens, whose large activations the model relies on);
- oracle_dense: oracle_in_training's scores from a forward with every channel;
- oracle_family_mean / oracle_global_mean (with --mean-from N): the oracle_in_training scores
  (standardised) averaged over the first N *training* examples of each family / of all families, one
  mask per family / one for all: how much of the oracle a selector that knew only the task family
  (or nothing) could reach;
- griffin_prompt_tuned: GRIFFIN over the prompt alone (the predictor's input, no answer) in a forward of
  the tuned weights with every channel: a realisable selector, since the predictor's prompt pass is
  that same forward;
- predictor_plus_griffin_prompt: the sum of the predictor's and griffin_prompt_tuned's per-layer
  standardised scores;
- with --prefix R (every row then scores only the response tokens after the first R, the same tokens
  for every row): griffin_prefix, GRIFFIN over the prompt and the first R response tokens (a forward of
  the tuned weights, every channel on): what a selector that re-selected once after R generated tokens
  could use; predictor_plus_griffin_prefix, its per-layer standardised scores added to the predictor's;
- tuned_dense: the artifact's tuned weights, every channel; base_dense: the base model.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import platform
import sys
from pathlib import Path

import torch


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True, help="training config whose data split gives the examples")
    p.add_argument("--artifact", required=True)
    p.add_argument("--per-family", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--mean-from", type=int, default=0, metavar="N",
                   help="also the family-mean and global-mean oracle masks from N training examples per family")
    p.add_argument("--prefix", type=int, default=0, metavar="R",
                   help="also the re-selection rows after R response tokens; every row then scores tokens after the first R")
    p.add_argument("--modes", nargs="*", default=None, help="rows to run (default: all); tuned_dense and base_dense always run")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    torch.set_num_threads(a.threads)

    from ifprune.core.prompt_pass import decoder_body
    from ifprune.selection.selectors import griffin_columns
    from ifprune.training.config import load_config
    from ifprune.selection.softtopk import hard_topk_indicator
    from ifprune.training.loop import Trainer, loss_logits, sft_batch, split_at_refresh

    # the artifact's own head and LLM change (a recipe's init_llm_from would put a new LoRA on the base instead)
    cfg = load_config(a.config, {"init_from": a.artifact, "init_llm_from": None,
                                 "output_dir": str(Path(a.out).with_suffix("")) + ".run", "progress": False,
                                 "resume": False})
    cfg.data.eval_per_family = a.per_family
    tr = Trainer(cfg)
    val = tr.eval_examples()
    tr.model.eval()
    W = tr.width

    def hard(z):
        return hard_topk_indicator(z, W)

    def griffin_under(masks, ids, att, tokens):
        """GRIFFIN's scores over `tokens`, read at each down projection before `masks` in a forward of ids."""
        out = torch.zeros(ids.shape[0], tr.lm.num_layers, tr.lm.d_ffn)

        def rec(i, x):
            out[:, i] = griffin_columns(x, tokens)

        with tr.masked.apply(masks, record=rec):
            decoder_body(tr.model)(input_ids=ids, attention_mask=att, use_cache=False)
        return out

    def oracle_scores(b, masks, response_only=False):
        answer = b.attention_mask.bool()
        if response_only:
            answer = answer & (b.labels != -100)
        return griffin_under(masks, b.input_ids, b.attention_mask, answer)

    from ifprune.selection.heads import standardise

    def prompt_scores(b):
        """GRIFFIN over the prompt the predictor reads, every channel on (what inference could compute)."""
        return griffin_under(ones, b.pred_ids, b.pred_mask, b.pred_mask)

    def after_prefix(b):
        """The batch with the first R response tokens' loss off, and the mask of the tokens up to them."""
        known = b.attention_mask.bool() & ((b.labels != -100).long().cumsum(1) <= a.prefix)
        return dataclasses.replace(b, labels=split_at_refresh(b.labels, a.prefix)[1]), known

    def prefix_scores(b, known):
        return griffin_under(ones, b.input_ids, b.attention_mask, known)

    ones = torch.ones(1, tr.lm.num_layers, tr.lm.d_ffn)
    fam_mean: dict[str, torch.Tensor] = {}
    if a.mean_from:
        picked: dict[str, list] = {}
        pos = 0
        while pos < len(tr.train_set) and any(len(picked.get(f, [])) < a.mean_from for f in cfg.data.families):
            e = tr._example(pos)
            if len(picked.setdefault(e.family, [])) < a.mean_from:
                picked[e.family].append(e)
            pos += 1
        with torch.no_grad():
            for f, exs in picked.items():
                acc = []
                for chunk in (exs[i:i + 8] for i in range(0, len(exs), 8)):
                    b = sft_batch(tr.lm.tokenizer, chunk, cfg)
                    acc.append(standardise(oracle_scores(b, hard(tr.scores(b).float()))))
                fam_mean[f] = torch.cat(acc).mean(0)
        fam_mean["*"] = torch.stack([fam_mean[f] for f in picked]).mean(0)

    rows: dict[str, dict] = {}
    overlap: dict[str, list[float]] = {}
    with torch.no_grad():
        modes = ["predictor", "oracle_in_training", "oracle_response_in_training", "oracle_dense"]
        modes += ["oracle_family_mean", "oracle_global_mean"] if fam_mean else []
        modes += ["griffin_prompt_tuned", "predictor_plus_griffin_prompt"]
        modes += ["griffin_prefix", "predictor_plus_griffin_prefix"] if a.prefix else []
        if a.modes is not None:
            modes = [m for m in modes if m in a.modes]
        for mode in modes + ["tuned_dense", "base_dense"]:
            sums, counts = {}, {}
            for chunk in (val[i:i + 8] for i in range(0, len(val), 8)):
                b = sft_batch(tr.lm.tokenizer, chunk, cfg)
                if a.prefix:
                    b, known = after_prefix(b)
                pred = hard(tr.scores(b).float())
                if mode == "predictor":
                    m = pred
                elif mode == "oracle_in_training":
                    m = hard(oracle_scores(b, pred))
                    for f, o in zip(b.families, ((m * pred).sum(-1).mean(-1) / W).tolist()):
                        overlap.setdefault(f, []).append(o)
                elif mode == "oracle_response_in_training":
                    m = hard(oracle_scores(b, pred, response_only=True))
                elif mode == "oracle_dense":
                    m = hard(oracle_scores(b, ones))
                elif mode == "griffin_prompt_tuned":
                    m = hard(prompt_scores(b))
                elif mode == "predictor_plus_griffin_prompt":
                    m = hard(standardise(tr.scores(b).float()) + standardise(prompt_scores(b)))
                elif mode == "griffin_prefix":
                    m = hard(prefix_scores(b, known))
                elif mode == "predictor_plus_griffin_prefix":
                    m = hard(standardise(tr.scores(b).float()) + standardise(prefix_scores(b, known)))
                elif mode == "oracle_family_mean":
                    m = hard(torch.stack([fam_mean[f] for f in b.families]))
                elif mode == "oracle_global_mean":
                    m = hard(fam_mean["*"]).unsqueeze(0)
                else:
                    m = ones
                ctx = tr.peft.disable_adapter() if mode == "base_dense" else contextlib.nullcontext()
                with ctx, tr.masked.apply(m):
                    out = loss_logits(tr.model, b.input_ids, b.attention_mask, b.labels)
                for f, si, ci in zip(b.families, *(x.tolist() for x in out.losses())):
                    sums[f] = sums.get(f, 0.0) + si
                    counts[f] = counts.get(f, 0) + ci
            r = {f: sums[f] / counts[f] for f in sorted(sums) if counts[f]}  # --prefix: short answers score nothing
            r["all"] = sum(sums.values()) / sum(counts.values())
            rows[mode] = r
            print(mode, " ".join(f"{f} {v:.4f}" for f, v in r.items()), file=sys.stderr, flush=True)
    base = rows["base_dense"]
    res = {"config": a.config, "artifact": a.artifact, "examples": len(val), "per_family": a.per_family,
           "mean_from": a.mean_from, "prefix": a.prefix, "width": W, "d_ffn": tr.lm.d_ffn, "threads": a.threads, "machine": platform.processor() or platform.machine(),
           "torch": torch.__version__, "nll": rows,
           "x_base_dense": {m: {f: v / base[f] for f, v in r.items()} for m, r in rows.items()},
           "predictor_oracle_overlap": {f: sum(v) / len(v) for f, v in sorted(overlap.items())},
           "random_overlap": W / tr.lm.d_ffn}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    for m, r in res["x_base_dense"].items():
        print(f"{m:20s}", " ".join(f"{f} {v:.3f}x" for f, v in r.items()))
    print("predictor vs oracle_in_training overlap", {f: round(v, 3) for f, v in res["predictor_oracle_overlap"].items()},
          "random", round(res["random_overlap"], 3))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
