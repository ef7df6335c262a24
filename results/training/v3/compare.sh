#!/bin/sh
# Validation NLL per family for the v3 artifacts (keep 1/2 and keep 3/4, SFT continued from v2) against
# v2, GRIFFIN (plain and with output compensation) at the same keeps, and dense, with and without
# compensation on the artifacts' tuned weights; per-task plans too. The SFT validation slices (first
# 12 per family of 6: held out from every run's training and from the calibration mix; never a test
# split). Resumable (per-example cache): run it again to finish an interrupted run.
# Usage: sh results/training/v3/compare.sh [V3_KEEP50 [V3_KEEP75 [V2]]]
set -e
export IFPRUNE_CACHE=${IFPRUNE_CACHE:-$HOME/.cache/ifprune} HF_HUB_OFFLINE=1
THREADS=${THREADS:-2}
V50=${1:-runs/v3/keep50-sft/artifact}
V75=${2:-runs/v3/keep75-sft/artifact}
V2=${3:-results/training/artifacts/smollm2-135m-keep50-v2}
VAL="$IFPRUNE_CACHE/sft_validation_12.jsonl"
.venv/bin/python -m ifprune.training.data_sft --out "$VAL" --val-per-family 12
exec .venv/bin/ifprune eval compare --threads "$THREADS" \
  --suites nll \
  --selectors dense griffin "predictor:$V2" "predictor:$V50" "predictor:$V75" "predictor-task:$V50" "predictor-task:$V75" \
  --keeps 0.5 0.75 \
  --compensations none calibration \
  --data "$VAL" --limits nll=72 --no-progress --no-plots \
  --out results/training/v3/compare
