#!/bin/sh
# Validation NLL per family for v11 (keep 1/2 trained under re-selection after 32 answer tokens) against v5
# (the shipped keep-1/2 artifact), each with and without re-selection at inference, on both held-out
# slices of results/refresh/ (a: the 72 every compare reads; b: examples 12..23 per family). v11's recipe
# records `refresh: 32`, so its plain row is `predictor` (re-selection on, its default) and
# `predictor+refresh0` turns it off. Resumable (per-example cache).
set -e
V11=${1:-runs/v11/keep50-refresh/artifact}
V5=${V5:-results/training/artifacts/smollm2-135m-keep50-v5}
. benchmarks/heldout_slices.sh
KEEPS=0.5 nll_slices results/training/v11/compare dense "predictor:$V5" "predictor+refresh32:$V5" \
  "predictor+refresh0:$V11" "predictor+refresh-once:$V11"
summarise_slices results/training/v11/compare results/training/v11/summary \
  "v11 (keep 1/2, trained under re-selection) vs v5"
.venv/bin/python benchmarks/pooled_nll.py results/training/v11/compare/results.json results/training/v11/compareb/results.json \
  --out results/training/v11/pooled.json
