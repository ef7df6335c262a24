#!/bin/sh
# Validation NLL per family for the v6 oracle-target A/B at keep 3/4: arm "oracle" (oracle_weight 1) and
# arm "control" (oracle_weight 0), both continued from the v5 keep-3/4 artifact on the same batches,
# against v5 itself and dense; per-task plans too. The same 72 held-out examples as v3-v5 (first 12 per
# family of 6: held out from every run's training and from the calibration mix; never a test split).
# Resumable (per-example cache); the dense and v5 rows come from the cache of earlier compares.
# Usage: sh results/training/v6/compare.sh [ORACLE [CONTROL]]; ARMS="oracle" runs one arm only;
# V=v7 TITLE=... compares that version's arms (results/training/v7/compare.sh does).
set -e
export IFPRUNE_CACHE=${IFPRUNE_CACHE:-$HOME/.cache/ifprune} HF_HUB_OFFLINE=1
THREADS=${THREADS:-2}
V=${V:-v6}
A=${1:-runs/$V/keep75-oracle/artifact}
B=${2:-runs/$V/keep75-control/artifact}
V5=${V5:-results/training/artifacts/smollm2-135m-keep75-v5}
VAL="$IFPRUNE_CACHE/sft_validation_12.jsonl"
.venv/bin/python -m ifprune.training.data_sft --out "$VAL" --val-per-family 12
SEL="dense predictor:$V5"
for ARM in ${ARMS:-oracle control}; do
  [ "$ARM" = oracle ] && SEL="$SEL predictor:$A predictor-task:$A"
  [ "$ARM" = control ] && SEL="$SEL predictor:$B"
done
.venv/bin/ifprune eval compare --threads "$THREADS" --suites nll --keeps 0.75 --data "$VAL" --limits nll=72 \
  --no-progress --no-plots --compensations none --selectors $SEL --out results/training/$V/compare${OUT_SUFFIX:-}
.venv/bin/python benchmarks/summarise_compare.py results/training/$V/compare${OUT_SUFFIX:-}/results.json \
  results/training/$V/summary${OUT_SUFFIX:-}.md "${TITLE:-v6 training (oracle-target A/B at keep 3/4)}"
