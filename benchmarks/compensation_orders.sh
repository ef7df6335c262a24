#!/bin/sh
# Validation NLL per family for both orders of compensation-aware training at one keep: CONTROL (trained under
# plain masks) with and without the refit at inference, TRAINED (the same run trained under compensated plans)
# with and without it, dense for reference, on both held-out slices of results/refresh/ (a: the 72 every
# compare reads; b: examples 12..23 per family). Both artifacts re-select as their recipes say; the
# +refresh0 row runs TRAINED with one plan per answer, as an export does. Resumable (per-example cache).
#   sh benchmarks/compensation_orders.sh KEEP CONTROL TRAINED OUTDIR "TITLE"
# SELECTORS overrides the rows (e.g. to measure the control while the other run trains).
set -e
KEEP=$1 CONTROL=$2 TRAINED=$3 OUTDIR=$4 TITLE=$5
. benchmarks/heldout_slices.sh
THREADS=${THREADS:-1} KEEPS=$KEEP COMPENSATIONS="none calibration" nll_slices $OUTDIR/compare \
  ${SELECTORS:-dense "predictor:$CONTROL" "predictor:$TRAINED" "predictor+refresh0:$TRAINED"}
summarise_slices $OUTDIR/compare $OUTDIR/summary "$TITLE"
.venv/bin/python benchmarks/pooled_nll.py $OUTDIR/compare/results.json $OUTDIR/compareb/results.json \
  --out $OUTDIR/pooled.json
