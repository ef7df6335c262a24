#!/bin/sh
# Validation NLL per family for v8 (v5's recipe on unread examples) against v5 and dense: the same 72
# held-out examples as every compare. Resumable (per-example cache).
set -e
. benchmarks/heldout_slices.sh
SLICES=a nll_slices results/training/v8/compare dense "predictor:${V5:-results/training/artifacts/smollm2-135m-keep75-v5}" \
  "predictor:${1:-runs/v8/keep75-sft/artifact}"
.venv/bin/python benchmarks/summarise_compare.py results/training/v8/compare/results.json results/training/v8/summary.md \
  "v8 training (v5's recipe on unread examples, keep 3/4)"
