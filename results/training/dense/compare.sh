#!/bin/sh
# The fair dense reference on the held-out NLL: the dense model fine-tuned on IFPruning's data and budget
# (runs/dense/v5-sft: run.sh here) beside the base dense model, the shipped defaults (v10 at keep 3/4, v11 at
# keep 1/2) and learned-static at both keeps (results/training/static/run.sh), on both held-out slices of
# results/refresh/ (a: the 72 every compare reads; b: examples 12..23 per family; 144 in all). Artifacts run
# at their own width (the --keeps below applies to dense only); per-example caches, so rows already scored
# elsewhere are read back, not recomputed. Then pooled per-family NLL over both slices, divided by the base
# dense row and by dense-sft (pooled.json), and paired differences against dense-sft (paired_*.json).
# The learned-static rows need their artifacts (ignored runs/static/, ~2 h each to re-create); without them
# they are left out, with a message.
set -e
DENSE_SFT=${DENSE_SFT:-runs/dense/v5-sft/artifact}
[ -f $DENSE_SFT/config.json ] || { echo "no dense SFT artifact at $DENSE_SFT: run results/training/dense/run.sh"; exit 2; }
STATIC= PAIRS="dense ifpruning+refresh32[smollm2-135m-keep75]:v10 ifpruning+refresh32[smollm2-135m-keep50]:v11"
if [ -d runs/static/v5-keep75/artifact ] && [ -d runs/static/v5-sft/artifact ]; then
  STATIC="predictor:runs/static/v5-keep75/artifact predictor:runs/static/v5-sft/artifact"
  PAIRS="$PAIRS learned-static[v5-keep75]:static75 learned-static[v5-sft]:static50"
else
  echo "learned-static artifacts not in runs/static/ (results/training/static/run.sh): their rows left out"
fi
. benchmarks/heldout_slices.sh
D=results/training/dense
nll_slices $D/compare dense "predictor:$DENSE_SFT" predictor+refresh-once:src/ifprune/artifacts/smollm2-135m-keep75 \
  predictor+refresh-once:src/ifprune/artifacts/smollm2-135m-keep50 $STATIC
.venv/bin/python benchmarks/pooled_nll.py $D/compare/results.json $D/compareb/results.json --reference dense-sft \
  --out $D/pooled.json
P=".venv/bin/python benchmarks/paired_nll.py"
for B in $PAIRS; do
  $P $D/compare/results.json dense-sft "${B%:*}" --pool $D/compareb/results.json --out $D/paired_${B##*:}_vs_dense_sft.json
done
