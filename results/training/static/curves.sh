#!/bin/sh
# In-loop validation NLL against training tokens (first 8 held-out examples per family, hard masks, no
# compensation) for IFPruning and learned-static trained on the same data, order and recipe: keep 1/2, the
# lineage v2 -> v5 (1.57M tokens each) -> curves.{json,md,png}; keep 3/4, v2's two keep-1/2 stages then v3 -> v5
# at keep 3/4 -> curves75.{json,md,png}, beside the dense model fine-tuned on the keep-3/4 lineage's data and
# budget (results/training/dense/run.sh: keep 1.0, every channel) when its logs are there.
set -e
L=results/training S=results/training/static/logs D=results/training/dense/logs
P=".venv/bin/python benchmarks/training_curves.py"
V2="$L/v2/logs/stage1.jsonl,$L/v2/logs/stage2.jsonl"
$P --run "IFPruning (v2 -> v5)=$V2,$L/v3/logs/keep50-sft.jsonl,$L/v4/logs/keep50-sft.jsonl,$L/v5/logs/keep50-sft.jsonl" \
  --run "learned-static=$S/pretrain.jsonl,$S/v2-sft.jsonl,$S/v3-sft.jsonl,$S/v4-sft.jsonl,$S/v5-sft.jsonl" \
  --out $L/static/curves
if [ -f $S/v5-keep75.jsonl ]; then
  DENSE=; [ -f $D/v5-sft.jsonl ] && DENSE=1
  $P --run "IFPruning (v2, then v3 -> v5 at 3/4)=$V2,$L/v3/logs/keep75-sft.jsonl,$L/v4/logs/keep75-sft.jsonl,$L/v5/logs/keep75-sft.jsonl" \
    --run "learned-static=$S/pretrain.jsonl,$S/v2-sft.jsonl,$S/v3-keep75.jsonl,$S/v4-keep75.jsonl,$S/v5-keep75.jsonl" \
    ${DENSE:+--run "dense SFT (keep 1.0)=$D/pretrain.jsonl,$D/v2-sft.jsonl,$D/v3-sft.jsonl,$D/v4-sft.jsonl,$D/v5-sft.jsonl"} \
    --out $L/static/curves75
fi
