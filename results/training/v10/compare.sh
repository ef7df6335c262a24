#!/bin/sh
# Validation NLL per family for v10 (trained under re-selection after 32 answer tokens) against its control
# v8 (the same batches, without) and v5 (shipped), each with and without `+refresh32` at inference, on both
# held-out slices of results/refresh/ (a: the 72 every compare reads; b: examples 12..23 per family).
# v10 carries `refresh: 32` as its default, so its plain row is asked for as predictor+refresh0.
# Resumable (per-example cache); the dense and v5 rows come from results/refresh/compare.sh's cache.
set -e
V10=${1:-runs/v10/keep75-refresh/artifact}
V8=${V8:-runs/v8/keep75-sft/artifact}
V5=results/training/artifacts/smollm2-135m-keep75-v5
. benchmarks/heldout_slices.sh
nll_slices results/training/v10/compare dense "predictor:$V5" "predictor+refresh32:$V5" "predictor:$V8" \
  "predictor+refresh32:$V8" "predictor+refresh0:$V10" "predictor+refresh32:$V10"
summarise_slices results/training/v10/compare results/training/v10/summary "v10 (trained under re-selection) vs v8 and v5"
.venv/bin/python benchmarks/pooled_nll.py results/training/v10/compare/results.json results/training/v10/compareb/results.json \
  --out results/training/v10/pooled.json
