#!/bin/sh
# Validation NLL per family for v12 (pure distillation from v10, keep 3/4) against v10 (the shipped
# default, re-selecting after 32 tokens) and v10 without re-selection, on both held-out slices (a: the 72
# every compare reads; b: examples 12..23 per family). Resumable (per-example cache).
set -e
V12=${1:-runs/v12/keep75-distill/artifact}
V10=src/ifprune/artifacts/smollm2-135m-keep75
. benchmarks/heldout_slices.sh
THREADS=${THREADS:-1} nll_slices results/training/v12/compare dense "predictor+refresh-once:$V10" "predictor+refresh0:$V10" \
  "predictor+refresh-once:$V12" "predictor+refresh32:$V12"
summarise_slices results/training/v12/compare results/training/v12/summary \
  "v12 (keep 3/4, pure distillation to the dense model) vs v10"
.venv/bin/python benchmarks/pooled_nll.py results/training/v12/compare/results.json results/training/v12/compareb/results.json \
  --out results/training/v12/pooled.json
