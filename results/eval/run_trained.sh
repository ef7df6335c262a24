#!/bin/sh
# The trained selectors next to the training-free ones on the default model, keep 1/2:
# IFPruning per input and per task (the shipped artifact) and learned-static (same data and budget),
# against dense, wanda and griffin. nll is scored on the training's held-out validation slices
# (24 per family, never trained on), mc on the usual test sets. Resumable (per-example cache).
set -e
export IFPRUNE_CACHE=${IFPRUNE_CACHE:-/tmp/ifpc} HF_HUB_OFFLINE=1
VAL="$IFPRUNE_CACHE/sft_validation_24.jsonl"
.venv/bin/python -m ifprune.training.data_sft --out "$VAL" --val-per-family 24
ART=results/training/artifacts/smollm2-135m-keep50-v1  # the artifact these results measured (shipped until v2)
STATIC=results/training/artifacts/smollm2-135m-keep50-static
exec .venv/bin/ifprune eval compare \
  --suites nll mc \
  --selectors dense wanda griffin "predictor:$ART" "predictor-task:$ART" "predictor:$STATIC" \
  --keeps 0.5 \
  --calibration ../shared/data/pretrain/llamafactory/c4_demo.jsonl \
  --data "$VAL" --limits nll=144 mc=10 --no-progress \
  --out results/eval/trained "$@"
