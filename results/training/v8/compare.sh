#!/bin/sh
# Validation NLL per family for v8 (v5's recipe on unread examples) against v5 and dense: the same 72
# held-out examples as every compare. Resumable (per-example cache).
set -e
export IFPRUNE_CACHE=${IFPRUNE_CACHE:-$HOME/.cache/ifprune} HF_HUB_OFFLINE=1
VAL="$IFPRUNE_CACHE/sft_validation_12.jsonl"
.venv/bin/python -m ifprune.training.data_sft --out "$VAL" --val-per-family 12
.venv/bin/ifprune eval compare --threads "${THREADS:-2}" --suites nll --keeps 0.75 --data "$VAL" --limits nll=72 \
  --no-progress --no-plots --compensations none \
  --selectors dense "predictor:${V5:-results/training/artifacts/smollm2-135m-keep75-v5}" "predictor:${1:-runs/v8/keep75-sft/artifact}" \
  --out results/training/v8/compare
.venv/bin/python benchmarks/summarise_compare.py results/training/v8/compare/results.json results/training/v8/summary.md \
  "v8 training (v5's recipe on unread examples, keep 3/4)"
