#!/bin/sh
# In-loop validation NLL against training tokens (first 8 held-out examples per family, hard masks, no
# compensation) for the IFPruning keep-1/2 lineage v2 -> v5 and learned-static trained on the same data, order
# and recipe (1.57M tokens each) -> curves.{json,md,png}.
set -e
L=results/training
exec .venv/bin/python benchmarks/training_curves.py \
  --run "IFPruning (v2 -> v5)=$L/v2/logs/stage1.jsonl,$L/v2/logs/stage2.jsonl,$L/v3/logs/keep50-sft.jsonl,$L/v4/logs/keep50-sft.jsonl,$L/v5/logs/keep50-sft.jsonl" \
  --run "learned-static=$L/static/logs/pretrain.jsonl,$L/static/logs/v2-sft.jsonl,$L/static/logs/v3-sft.jsonl,$L/static/logs/v4-sft.jsonl,$L/static/logs/v5-sft.jsonl" \
  --out $L/static/curves
