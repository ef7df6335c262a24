#!/bin/sh
# Validation NLL per family for v9's two keep-1/2 arms (LoRA r=16, every LLM weight) against v5 (shipped)
# and dense: the same 72 held-out examples as every compare. Resumable (per-example cache).
set -e
export IFPRUNE_CACHE=${IFPRUNE_CACHE:-$HOME/.cache/ifprune} HF_HUB_OFFLINE=1
VAL="$IFPRUNE_CACHE/sft_validation_12.jsonl"
.venv/bin/python -m ifprune.training.data_sft --out "$VAL" --val-per-family 12
.venv/bin/ifprune eval compare --threads "${THREADS:-2}" --suites nll --keeps 0.5 --data "$VAL" --limits nll=72 \
  --no-progress --no-plots --compensations none \
  --selectors dense "predictor:${V5:-results/training/artifacts/smollm2-135m-keep50-v5}" \
  "predictor:${LORA:-runs/v9/keep50-lora/artifact}" "predictor:${FULL:-runs/v9/keep50-full/artifact}" \
  --out results/training/v9/compare
.venv/bin/python benchmarks/summarise_compare.py results/training/v9/compare/results.json results/training/v9/summary.md \
  "v9 training at keep 1/2 (LoRA r=16 vs every LLM weight, unread examples)"
