#!/bin/sh
# Validation NLL per family for v12 (pure distillation from v10, keep 3/4) against v10 (the shipped
# default, re-selecting after 32 tokens) and v10 without re-selection, on both held-out slices (a: the 72
# every compare reads; b: examples 12..23 per family). Resumable (per-example cache).
set -e
V12=${1:-runs/v12/keep75-distill/artifact}
V10=src/ifprune/artifacts/smollm2-135m-keep75
. benchmarks/heldout_slices.sh
for S in ${SLICES:-a b}; do
  VAL=$(slice_file $S) TAIL=$(slice_tail $S)
  OUT=results/training/v12/compare$TAIL
  .venv/bin/ifprune eval compare --threads "${THREADS:-1}" --suites nll --keeps 0.75 --data "$VAL" --limits nll=72 \
    --no-progress --no-plots --compensations none \
    --selectors dense "predictor:$V10" "predictor+refresh0:$V10" "predictor:$V12" "predictor+refresh32:$V12" --out $OUT
  .venv/bin/python benchmarks/summarise_compare.py $OUT/results.json results/training/v12/summary$TAIL.md \
    "v12 (keep 3/4, pure distillation to the dense model) vs v10, slice $S"
done
.venv/bin/python benchmarks/pooled_nll.py results/training/v12/compare/results.json results/training/v12/compareb/results.json \
  --out results/training/v12/pooled.json
