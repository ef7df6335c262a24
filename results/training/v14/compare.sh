#!/bin/sh
# Validation NLL per family, keep 3/4, both orders of compensation-aware training: v10 (the shipped default,
# trained under plain masks) with and without the refit at inference, and v14 (the same run trained under
# compensated plans) with and without it (benchmarks/compensation_orders.sh; one thread unless THREADS).
exec sh benchmarks/compensation_orders.sh 0.75 "${V10:-src/ifprune/artifacts/smollm2-135m-keep75}" \
  "${1:-runs/v14/keep75-compensated/artifact}" results/training/v14 \
  "v14 (keep 3/4, trained under compensated plans) vs v10"
