#!/bin/sh
# Held-out NLL with re-selection after every 32 answer tokens (+refresh-every32) against the shipped artifacts'
# single re-selection after 32 tokens, and the same with the prompt prefilled by the full model
# (+refresh-every32+dense-prefill: what `generate --refresh-every --prefill dense` runs), on both held-out
# slices of results/refresh/ (144 examples), at keep $KEEP (75 default, or 50). Rows scored before are read
# from the per-example caches.
set -e
KEEP=${KEEP:-75}
. benchmarks/heldout_slices.sh
D=results/refresh/every
A=src/ifprune/artifacts/smollm2-135m-keep$KEEP
P=".venv/bin/python benchmarks/paired_nll.py"
KEEPS=0.$KEEP nll_slices $D/compare$KEEP dense "predictor+refresh-once:$A" "predictor+refresh-every32+pruned-prefill:$A" \
  "predictor+refresh-every32+dense-prefill:$A"
keep_examples $D/compare$KEEP
.venv/bin/python benchmarks/pooled_nll.py $D/compare$KEEP/results.json $D/compare${KEEP}b/results.json --out $D/pooled$KEEP.json
$P $D/compare$KEEP/results.json "ifpruning+refresh32" "ifpruning+refresh-every32" \
  --pool $D/compare${KEEP}b/results.json --out $D/paired$KEEP.json
$P $D/compare$KEEP/results.json "ifpruning+refresh-every32" "ifpruning+refresh-every32+dense-prefill" \
  --pool $D/compare${KEEP}b/results.json --out $D/paired${KEEP}_dense_prefill.json
$P $D/compare$KEEP/results.json "ifpruning+refresh32" "ifpruning+refresh-every32+dense-prefill" \
  --pool $D/compare${KEEP}b/results.json --out $D/paired${KEEP}_both.json
