#!/bin/sh
# Learned-static at the budget (runs/static/v5-sft: 1.57M tokens, the data, order and recipe of the IFPruning
# lineage v2 -> v5) against the 157k-token learned-static of the first CPU run, and GRIFFIN with calibration
# compensation, at keep 1/2 on both held-out slices of results/refresh/ (a: the 72 every compare reads; b:
# examples 12..23 per family). IFPruning's rows (v5: the same budget; v11: shipped) and dense come from
# results/training/v11/compare*/ (same slices; per-example caches); paired.sh pairs them. Keep 3/4
# (compare75*/): learned-static of the keep-3/4 lineage (runs/static/v5-keep75: v2's stages, then v3 -> v5 at
# keep 3/4) against IFPruning at the same budget (v5 keep 3/4, one plan per answer), the shipped default (v10),
# dense and GRIFFIN with compensation, all rows here. Resumable.
set -e
STATIC=${1:-runs/static/v5-sft/artifact}
STATIC75=${2:-runs/static/v5-keep75/artifact}
STATIC_V1=results/training/artifacts/smollm2-135m-keep50-static
. benchmarks/heldout_slices.sh
D=results/training/static KEEPS=" ${KEEPS:-0.5 0.75} "
case $KEEPS in *" 0.5 "*)
  KEEPS=0.5 nll_slices $D/compare "predictor:$STATIC" "predictor:$STATIC_V1"
  KEEPS=0.5 COMPENSATIONS=calibration OUT_SUFFIX=_griffin_compensated nll_slices $D/compare griffin ;;
esac
case $KEEPS in *" 0.75 "*)
  KEEPS=0.75 nll_slices $D/compare75 dense "predictor:$STATIC75" predictor:results/training/artifacts/smollm2-135m-keep75-v5 \
    predictor+refresh-once:src/ifprune/artifacts/smollm2-135m-keep75
  KEEPS=0.75 COMPENSATIONS=calibration OUT_SUFFIX=_griffin_compensated nll_slices $D/compare75 griffin ;;
esac
