#!/bin/sh
# Re-selection after 32 answer tokens (selection.refresh) on the shipped artifacts: validation NLL per
# family, for each keep: dense, the artifact as shipped, and the same artifact with `+refresh32`.
# Two slices of the held-out validation split (never a test split, never trained on):
#   a: the first 12 examples per family, the 72 every training compare reads (compare75, compare50);
#   b: examples 12..23 per family, 72 that no compare had read before (compare75b, compare50b).
# R = 32 and the equal-weight sum were fixed from one diagnostic on 48 examples of slice a
# (results/training/v9/prefix32_v5_keep75.json) before any compare with refresh ran; nothing was swept.
# Resumable (per-example cache).
set -e
THREADS=${THREADS:-2}
R=${R:-32}
. benchmarks/heldout_slices.sh
for S in ${SLICES:-a b}; do
  VAL=$(slice_file $S) TAIL=$(slice_tail $S)
  for K in ${KEEPS:-75 50}; do
    A=results/training/artifacts/smollm2-135m-keep$K-v5  # v5, shipped at both keeps when this ran
    OUT=results/refresh/compare$K$TAIL
    .venv/bin/ifprune eval compare --threads "$THREADS" --suites nll --keeps "0.$K" --data "$VAL" --limits nll=72 \
      --no-progress --no-plots --compensations none \
      --selectors dense "predictor:$A" "predictor+refresh$R:$A" --out $OUT
    .venv/bin/python benchmarks/summarise_compare.py $OUT/results.json results/refresh/summary$K$TAIL.md \
      "Re-selection after $R answer tokens on the shipped keep-0.$K artifact (slice $S)"
    .venv/bin/python benchmarks/paired_nll.py $OUT/results.json ifpruning ifpruning+refresh$R --out results/refresh/paired$K$TAIL.json
  done
done
