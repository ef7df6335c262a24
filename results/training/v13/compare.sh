#!/bin/sh
# Validation NLL per family, keep 1/2, both orders of compensation-aware training: v11 (trained under plain
# masks) with and without the refit at inference, and v13 (the same run trained under compensated plans) with
# and without it (benchmarks/compensation_orders.sh; one thread unless THREADS). v11 one plan per answer too.
V13=${1:-runs/v13/keep50-compensated/artifact}
V11=${V11:-src/ifprune/artifacts/smollm2-135m-keep50}
export SELECTORS=${SELECTORS:-dense "predictor+refresh-once:$V11" "predictor+refresh0:$V11" "predictor+refresh-once:$V13" "predictor+refresh0:$V13"}
exec sh benchmarks/compensation_orders.sh 0.5 "$V11" "$V13" "${OUTDIR:-results/training/v13}" \
  "v13 (keep 1/2, trained under compensated plans) vs v11"
