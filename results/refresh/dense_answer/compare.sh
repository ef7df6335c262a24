#!/bin/sh
# The "dense-answer" prefill (selection.prefill; the default since 2026-12-07) against "dense" (the default before:
# each re-selection re-runs the answer so far through the compact model) on the shipped artifacts, every 32 tokens as they run: held-out NLL
# on both validation slices (144 examples) and fidelity (the dense model's own answers to 120 unread chat prompts,
# benchmarks/fidelity.sh's set). Then paired differences (dense-answer minus dense). One thread; resumable.
set -e
. benchmarks/heldout_slices.sh
D=results/refresh/dense_answer
ART=src/ifprune/artifacts
FID="$IFPRUNE_CACHE/fidelity_unread_4000.jsonl"
.venv/bin/python -m ifprune.training.data_sft --out "$IFPRUNE_CACHE/sft_unread_4000.jsonl" --unread-after 4000 \
  --per-family 60 --families general,code
.venv/bin/python benchmarks/dense_answers.py "$IFPRUNE_CACHE/sft_unread_4000.jsonl" results/quality/loops/dense.jsonl "$FID"
for K in 75 50; do
  KEEP=0.$K; [ $K = 50 ] && KEEP=0.5
  ROWS="predictor+dense-prefill:$ART/smollm2-135m-keep$K predictor+dense-answer-prefill:$ART/smollm2-135m-keep$K"
  THREADS=${THREADS:-1} KEEPS=$KEEP nll_slices $D/nll$K dense $ROWS
  .venv/bin/ifprune eval compare --threads ${THREADS:-1} --suites nll --data "$FID" --limits nll=120 --no-progress \
    --no-plots --keeps $KEEP --compensations none --selectors dense $ROWS --out $D/fidelity$K
  A="ifpruning+refresh-every32+dense-prefill" B="ifpruning+refresh-every32+dense-answer-prefill"
  .venv/bin/python benchmarks/paired_nll.py $D/nll$K/results.json "$A" "$B" --pool $D/nll${K}b/results.json \
    --out $D/paired_nll$K.json
  .venv/bin/python benchmarks/paired_nll.py $D/fidelity$K/results.json "$A" "$B" --out $D/paired_fidelity$K.json
done
