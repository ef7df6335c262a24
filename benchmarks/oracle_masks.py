"""Is the selector or the pruned model the limit? Validation NLL of a trained artifact under masks from
its own predictor against masks from GRIFFIN scores of the *response* tokens (an oracle: it sees the
answer), with and without the artifact's masks upstream, against its tuned weights with every channel
and the base model dense. The first N held-out examples per family of a training config's split.

    python benchmarks/oracle_masks.py --config configs/smollm2-keep75-v5-sft-cpu.yaml \
        --artifact results/training/artifacts/smollm2-135m-keep75-v5 --per-family 8 --threads 2 \
        --out results/training/v6/oracle_masks_v5.json

Rows:
- predictor: the artifact's masks (what inference runs, no compensation);
- oracle_in_training: GRIFFIN of the response tokens read at each down projection *before* the
  predictor's mask in the predictor-masked forward (what `oracle_weight` trains the head towards);
- oracle_dense: the same scores from a forward with every channel;
- tuned_dense: the artifact's tuned weights, every channel; base_dense: the base model.
"""

from __future__ import annotations

import argparse
import contextlib
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
    p.add_argument("--out", required=True)
    a = p.parse_args()
    torch.set_num_threads(a.threads)

    from ifprune.core.prompt_pass import decoder_body
    from ifprune.selection.selectors import griffin_columns
    from ifprune.training.config import load_config
    from ifprune.training.loop import Trainer, loss_logits, sft_batch

    cfg = load_config(a.config, {"init_from": a.artifact, "output_dir": str(Path(a.out).with_suffix("")) + ".run",
                                 "progress": False, "resume": False})
    cfg.data.eval_per_family = a.per_family
    tr = Trainer(cfg)
    val = tr.eval_examples()
    tr.model.eval()
    W = tr.width

    def hard(z):
        return torch.zeros_like(z).scatter_(-1, z.topk(W, -1).indices, 1.0)

    def response_scores(b, masks):
        out = torch.zeros(b.input_ids.shape[0], tr.lm.num_layers, tr.lm.d_ffn)
        answer = (b.labels != -100) & b.attention_mask.bool()

        def rec(i, x):
            out[:, i] = griffin_columns(x, answer)

        with tr.masked.apply(masks, record=rec):
            decoder_body(tr.model)(input_ids=b.input_ids, attention_mask=b.attention_mask, use_cache=False)
        return out

    rows: dict[str, dict] = {}
    overlap: dict[str, list[float]] = {}
    ones = torch.ones(1, tr.lm.num_layers, tr.lm.d_ffn)
    with torch.no_grad():
        for mode in ("predictor", "oracle_in_training", "oracle_dense", "tuned_dense", "base_dense"):
            sums, counts = {}, {}
            for chunk in (val[i:i + 8] for i in range(0, len(val), 8)):
                b = sft_batch(tr.lm.tokenizer, chunk, cfg)
                pred = hard(tr.scores(b).float())
                if mode == "predictor":
                    m = pred
                elif mode == "oracle_in_training":
                    m = hard(response_scores(b, pred))
                    for f, o in zip(b.families, ((m * pred).sum(-1).mean(-1) / W).tolist()):
                        overlap.setdefault(f, []).append(o)
                elif mode == "oracle_dense":
                    m = hard(response_scores(b, ones))
                else:
                    m = ones
                ctx = tr.peft.disable_adapter() if mode == "base_dense" else contextlib.nullcontext()
                with ctx, tr.masked.apply(m):
                    out = loss_logits(tr.model, b.input_ids, b.attention_mask, b.labels)
                for f, si, ci in zip(b.families, *(x.tolist() for x in out.losses())):
                    sums[f] = sums.get(f, 0.0) + si
                    counts[f] = counts.get(f, 0) + ci
            r = {f: sums[f] / counts[f] for f in sorted(sums)}
            r["all"] = sum(sums.values()) / sum(counts.values())
            rows[mode] = r
            print(mode, " ".join(f"{f} {v:.4f}" for f, v in r.items()), file=sys.stderr, flush=True)
    base = rows["base_dense"]
    res = {"config": a.config, "artifact": a.artifact, "examples": len(val), "per_family": a.per_family,
           "width": W, "d_ffn": tr.lm.d_ffn, "threads": a.threads, "machine": platform.processor() or platform.machine(),
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
