#!/bin/sh
# Validation NLL per family for v9's two keep-1/2 arms (LoRA r=16, every LLM weight) against v5 (shipped)
# and dense: the same 72 held-out examples as every compare. Resumable (per-example cache).
set -e
. benchmarks/heldout_slices.sh
SLICES=a KEEPS=0.5 nll_slices results/training/v9/compare dense \
  "predictor:${V5:-results/training/artifacts/smollm2-135m-keep50-v5}" \
  "predictor:${LORA:-runs/v9/keep50-lora/artifact}" "predictor:${FULL:-runs/v9/keep50-full/artifact}"
.venv/bin/python benchmarks/summarise_compare.py results/training/v9/compare/results.json results/training/v9/summary.md \
  "v9 training at keep 1/2 (LoRA r=16 vs every LLM weight, unread examples)"
