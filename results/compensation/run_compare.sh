#!/bin/sh
# Validation NLL per family for every selector with and without output compensation, at keep 1/2,
# 1/3 and 3/4 (trained artifacts at their own width, 1/2), on the SFT validation slices (the first 12 per
# family of 6, held out from training and from the calibration mix; never a test split).
# Resumable: per-example results are cached. Usage: sh results/compensation/run_compare.sh [MODES...]
set -e
export IFPRUNE_CACHE=${IFPRUNE_CACHE:-$HOME/.cache/ifprune} HF_HUB_OFFLINE=1
export OMP_NUM_THREADS=${THREADS:-2}
VAL="$IFPRUNE_CACHE/sft_validation_12.jsonl"
.venv/bin/python -m ifprune.training.data_sft --out "$VAL" --val-per-family 12
ART=results/training/artifacts/smollm2-135m-keep50-v1  # the artifact these results measured (shipped until v2)
STATIC=results/training/artifacts/smollm2-135m-keep50-static
MODES=${*:-none calibration}
exec .venv/bin/ifprune eval compare \
  --suites nll \
  --selectors dense random magnitude wanda griffin "predictor:$ART" "predictor-task:$ART" "predictor:$STATIC" \
  --keeps 0.5 0.333 0.75 \
  --compensations $MODES \
  --data "$VAL" --limits nll=72 --no-progress --no-plots \
  --out results/compensation/compare
