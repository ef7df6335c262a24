#!/bin/sh
# Validation NLL per family for the v5 distillation A/B at keep 3/4: arm "sft" (cross-entropy) and arm
# "distill" (+ KL to the dense base), both continued from the shipped v4 keep-3/4 artifact on the same
# examples (1,750 unread, 810 of a second pass), against v4 itself, GRIFFIN with and without output compensation, and dense; per-task
# plans too. The same SFT validation slices as v3/v4 (first 12 per family of 6: held out from every run's
# training and from the calibration mix; never a test split). Second command: the refit-after-training
# order of compensation-aware inference (calibration compensation on the tuned weights) for the arm
# given as $REFIT (default: sft). Resumable (per-example cache).
# Usage: sh results/training/v5/compare.sh [V5_SFT [V5_DISTILL]]
set -e
export IFPRUNE_CACHE=${IFPRUNE_CACHE:-$HOME/.cache/ifprune} HF_HUB_OFFLINE=1
THREADS=${THREADS:-2}
A=${1:-runs/v5/keep75-sft/artifact}
B=${2:-runs/v5/keep75-distill/artifact}
V4=${V4:-results/training/artifacts/smollm2-135m-keep75-v4}
REFIT=${REFIT:-$A}
VAL="$IFPRUNE_CACHE/sft_validation_12.jsonl"
.venv/bin/python -m ifprune.training.data_sft --out "$VAL" --val-per-family 12
COMMON="--suites nll --keeps 0.75 --data $VAL --limits nll=72 --no-progress --no-plots"
.venv/bin/ifprune eval compare --threads "$THREADS" $COMMON --compensations none \
  --selectors dense griffin "predictor:$V4" "predictor:$A" "predictor:$B" "predictor-task:$A" "predictor-task:$B" \
  --out results/training/v5/compare
.venv/bin/ifprune eval compare --threads "$THREADS" $COMMON --compensations calibration \
  --selectors griffin "predictor:$REFIT" --out results/training/v5/compare_compensated
.venv/bin/python benchmarks/summarise_compare.py \
  results/training/v5/compare/results.json,results/training/v5/compare_compensated/results.json \
  results/training/v5/summary.md "v5 training (distillation A/B at keep 3/4)"
