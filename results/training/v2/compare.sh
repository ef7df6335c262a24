#!/bin/sh
# Validation NLL per family at keep 1/2 for the v2 artifact (stage 1 + 2) against the v1 artifact
# (157k tokens of SFT only), GRIFFIN and dense, with and without output compensation, on the SFT
# validation slices (the first 12 per family of 6: held out from both runs' training and from the
# calibration mix; never a test split). Resumable (per-example cache).
# Usage: sh results/training/v2/compare.sh V2_ARTIFACT V1_ARTIFACT
set -e
export IFPRUNE_CACHE=${IFPRUNE_CACHE:-$HOME/.cache/ifprune} HF_HUB_OFFLINE=1
export OMP_NUM_THREADS=${THREADS:-2}
V2=${1:?v2 artifact dir}
V1=${2:?v1 artifact dir}
VAL="$IFPRUNE_CACHE/sft_validation_12.jsonl"
.venv/bin/python -m ifprune.training.data_sft --out "$VAL" --val-per-family 12
exec .venv/bin/ifprune eval compare \
  --suites nll \
  --selectors dense griffin "predictor:$V1" "predictor:$V2" "predictor-task:$V2" \
  --keeps 0.5 \
  --compensations none calibration \
  --data "$VAL" --limits nll=72 --no-progress --no-plots \
  --out results/training/v2/compare
