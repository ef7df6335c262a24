#!/bin/sh
# Validation NLL per family for the v5 keep-1/2 continuation (from the shipped v4 keep-1/2 artifact, 400
# steps: 1,350 unread examples, 250 of a second pass) against v4 itself (the shipped one before it; give its path as $V4 once it is
# replaced: `git show` it from commit 8ef7a48; the committed summary50.md has its row), GRIFFIN with output compensation, and dense; the same 72
# held-out examples as every earlier compare. Resumable (per-example cache).
set -e
export IFPRUNE_CACHE=${IFPRUNE_CACHE:-$HOME/.cache/ifprune} HF_HUB_OFFLINE=1
THREADS=${THREADS:-2}
A=${1:-runs/v5/keep50-sft/artifact}
V4=${V4:-src/ifprune/artifacts/smollm2-135m-keep50}  # v4 when this ran (shipped since: v5, then v11; no v4 copy kept)
VAL="$IFPRUNE_CACHE/sft_validation_12.jsonl"
.venv/bin/python -m ifprune.training.data_sft --out "$VAL" --val-per-family 12
COMMON="--suites nll --keeps 0.5 --data $VAL --limits nll=72 --no-progress --no-plots"
.venv/bin/ifprune eval compare --threads "$THREADS" $COMMON --compensations none \
  --selectors dense "predictor:$V4" "predictor:$A" "predictor-task:$A" --out results/training/v5/compare50
.venv/bin/ifprune eval compare --threads "$THREADS" $COMMON --compensations calibration --selectors griffin \
  --out results/training/v5/compare50_griffin_compensated
.venv/bin/python benchmarks/summarise_compare.py \
  results/training/v5/compare50/results.json,results/training/v5/compare50_griffin_compensated/results.json \
  results/training/v5/summary50.md "v5 training at keep 1/2"
