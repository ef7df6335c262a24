#!/bin/sh
# Does gathering the calibration moments under bf16 autocast (the default where bf16 matmuls are faster)
# change what compensation computes? v13 (keep 1/2, trained under compensated plans, which makes its NLL the
# most sensitive to the refit) on slice a, with moments gathered afresh in an empty cache (so in bf16 on a
# machine with fast bf16; the manifest records the precision). Compare with the row
# "ifpruning+refresh32[keep50-compensated]+calibration" of results/training/v13/compare/results.json (float32
# moments). One thread.
set -e
export HF_HUB_OFFLINE=1
CACHE=${CACHE:-/tmp/ifprune-bf16-moments}
mkdir -p "$CACHE"
IFPRUNE_CACHE="$CACHE" .venv/bin/python -m ifprune.training.data_sft --out "$CACHE/sft_validation_12.jsonl" --val-per-family 12
IFPRUNE_CACHE="$CACHE" .venv/bin/ifprune eval compare --threads 1 --suites nll --keeps 0.5 \
  --data "$CACHE/sft_validation_12.jsonl" --limits nll=72 --no-progress --no-plots --compensations calibration \
  --selectors "predictor:results/training/artifacts/smollm2-135m-keep50-v13" --out results/compensation/bf16_moments
cat "$CACHE"/moments/*.json
