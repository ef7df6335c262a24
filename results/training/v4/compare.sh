#!/bin/sh
# Validation NLL per family for the v4 artifacts (keep 1/2 and keep 3/4, SFT continued from the shipped
# v3 ones on unseen examples) against v3 (shipped before), GRIFFIN with and without output compensation
# at the same keeps, and dense; per-task plans too. The same SFT validation slices as v3 (first 12 per
# family of 6: held out from every run's training and from the calibration mix; never a test split).
# Each artifact runs at its own keep, without compensation (a refit on the tuned weights measured worse
# for v2 and v3); GRIFFIN runs with and without it (second command). Resumable (per-example cache).
# Usage: sh results/training/v4/compare.sh [V4_KEEP50 [V4_KEEP75]]
set -e
export IFPRUNE_CACHE=${IFPRUNE_CACHE:-$HOME/.cache/ifprune} HF_HUB_OFFLINE=1
THREADS=${THREADS:-2}
V50=${1:-runs/v4/keep50-sft/artifact}
V75=${2:-runs/v4/keep75-sft/artifact}
# S50, S75: the shipped v3 artifacts when this ran (shipped since: v4, v5, v10/v11; no v3 copies kept)
S50=src/ifprune/artifacts/smollm2-135m-keep50
S75=src/ifprune/artifacts/smollm2-135m-keep75
VAL="$IFPRUNE_CACHE/sft_validation_12.jsonl"
.venv/bin/python -m ifprune.training.data_sft --out "$VAL" --val-per-family 12
COMMON="--suites nll --keeps 0.5 0.75 --data $VAL --limits nll=72 --no-progress --no-plots"
.venv/bin/ifprune eval compare --threads "$THREADS" $COMMON --compensations none \
  --selectors dense griffin "predictor:$S50" "predictor:$S75" "predictor:$V50" "predictor:$V75" \
    "predictor-task:$V50" "predictor-task:$V75" \
  --out results/training/v4/compare
.venv/bin/ifprune eval compare --threads "$THREADS" $COMMON --compensations calibration --selectors griffin \
  --out results/training/v4/compare_griffin_compensated
.venv/bin/python benchmarks/summarise_compare.py \
  results/training/v4/compare/results.json,results/training/v4/compare_griffin_compensated/results.json \
  results/training/v4/summary.md "v4 training"
