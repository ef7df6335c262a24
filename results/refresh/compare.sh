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
R=${R:-32}
. benchmarks/heldout_slices.sh
for K in ${KEEPS:-75 50}; do
  A=results/training/artifacts/smollm2-135m-keep$K-v5  # v5, shipped at both keeps when this ran
  KEEPS=0.$K nll_slices results/refresh/compare$K dense "predictor:$A" "predictor+refresh$R:$A"
  for S in ${SLICES:-a b}; do
    OUT=results/refresh/compare$K$(slice_tail $S)
    .venv/bin/python benchmarks/summarise_compare.py $OUT/results.json results/refresh/summary$K$(slice_tail $S).md \
      "Re-selection after $R answer tokens on the shipped keep-0.$K artifact (slice $S)"
    .venv/bin/python benchmarks/paired_nll.py $OUT/results.json ifpruning ifpruning+refresh$R \
      --out results/refresh/paired$K$(slice_tail $S).json
  done
done
