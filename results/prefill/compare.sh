#!/bin/sh
# Held-out NLL with the prompt prefilled by the full model (+dense-prefill) against the pruned prefill of today,
# for the shipped artifacts as their recipes run them (re-selection after 32 tokens), on both held-out slices of
# results/refresh/ (144 examples). KEEP=75 (default) or 50; KEEP=50 also GRIFFIN (training-free, no compensation)
# with and without. Rows scored before are read from the per-example caches.
set -e
KEEP=${KEEP:-75}
. benchmarks/heldout_slices.sh
D=results/prefill
A=src/ifprune/artifacts/smollm2-135m-keep$KEEP
P=".venv/bin/python benchmarks/paired_nll.py"
EXTRA=""
if [ "$KEEP" = 50 ]; then EXTRA="griffin griffin+dense-prefill"; fi
KEEPS=0.$KEEP nll_slices $D/compare$KEEP dense "predictor+refresh-once:$A" "predictor+refresh-once+dense-prefill:$A" $EXTRA
keep_examples $D/compare$KEEP
.venv/bin/python benchmarks/pooled_nll.py $D/compare$KEEP/results.json $D/compare${KEEP}b/results.json --out $D/pooled$KEEP.json
$P $D/compare$KEEP/results.json "ifpruning+refresh32" "ifpruning+refresh32+dense-prefill" \
  --pool $D/compare${KEEP}b/results.json --out $D/paired$KEEP.json
if [ -n "$EXTRA" ]; then
  $P $D/compare$KEEP/results.json griffin griffin+dense-prefill --pool $D/compare${KEEP}b/results.json \
    --out $D/paired${KEEP}_griffin.json
fi
