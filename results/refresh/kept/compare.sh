#!/bin/sh
# The "kept" prefill (selection.decoded: no full-model pass over the answer; re-selection from the FFN inputs the
# compact model read, the answer's KV cache as decoded) against "dense-answer" (the default when this ran) on the
# shipped artifacts, every 32 tokens as they run: held-out NLL on both validation slices (144 examples), fidelity
# on 120 unread chat prompts (benchmarks/fidelity.sh's set) and on the dense model's answers to the
# validation prompts (per family; python -m ifprune.training.teacher --split validation). Then paired differences
# (kept minus dense-answer). One thread; resumable. KEEPS="75 50" by default.
set -e
. benchmarks/heldout_slices.sh
D=results/refresh/kept
ART=src/ifprune/artifacts
fidelity_sets
for K in ${KEEPS:-75 50}; do
  KEEP=0.$K; [ $K = 50 ] && KEEP=0.5
  ROWS="predictor+dense-answer-prefill:$ART/smollm2-135m-keep$K predictor+kept-prefill:$ART/smollm2-135m-keep$K"
  A="ifpruning+refresh-every32+dense-answer-prefill" B="ifpruning+refresh-every32+kept-prefill"
  .venv/bin/ifprune eval compare --threads ${THREADS:-1} --suites nll --data "$FID" --limits nll=120 --no-progress \
    --no-plots --keeps $KEEP --compensations none --selectors dense $ROWS --out $D/fidelity$K
  .venv/bin/python benchmarks/paired_nll.py $D/fidelity$K/results.json "$A" "$B" --out $D/paired_fidelity$K.json
  .venv/bin/ifprune eval compare --threads ${THREADS:-1} --suites nll --data "$VFID" --limits nll=200 --no-progress \
    --no-plots --keeps $KEEP --compensations none --selectors dense $ROWS --out $D/vfidelity$K
  .venv/bin/python benchmarks/paired_nll.py $D/vfidelity$K/results.json "$A" "$B" --out $D/paired_vfidelity$K.json
  THREADS=${THREADS:-1} KEEPS=$KEEP nll_slices $D/nll$K dense $ROWS
  .venv/bin/python benchmarks/paired_nll.py $D/nll$K/results.json "$A" "$B" --pool $D/nll${K}b/results.json \
    --out $D/paired_nll$K.json
done
