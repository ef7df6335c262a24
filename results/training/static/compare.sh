#!/bin/sh
# Learned-static at the budget (runs/static/v5-sft: 1.57M tokens, the data, order and recipe of the IFPruning
# lineage v2 -> v5) against the 157k-token learned-static of the first CPU run, and GRIFFIN with calibration
# compensation, at keep 1/2 on both held-out slices of results/refresh/ (a: the 72 every compare reads; b:
# examples 12..23 per family). IFPruning's rows (v5: the same budget; v11: shipped) and dense come from
# results/training/v11/compare*/ (same slices; per-example caches); paired.sh pairs them. Resumable.
set -e
STATIC=${1:-runs/static/v5-sft/artifact}
STATIC_V1=results/training/artifacts/smollm2-135m-keep50-static
. benchmarks/heldout_slices.sh
for S in ${SLICES:-a b}; do
  VAL=$(slice_file $S) TAIL=$(slice_tail $S)
  D=results/training/static
  .venv/bin/ifprune eval compare --threads "${THREADS:-2}" --suites nll --keeps 0.5 --data "$VAL" --limits nll=72 \
    --no-progress --no-plots --compensations none --selectors "predictor:$STATIC" "predictor:$STATIC_V1" \
    --out $D/compare$TAIL
  .venv/bin/ifprune eval compare --threads "${THREADS:-2}" --suites nll --keeps 0.5 --data "$VAL" --limits nll=72 \
    --no-progress --no-plots --compensations calibration --selectors griffin --out $D/compare${TAIL}_griffin_compensated
done
