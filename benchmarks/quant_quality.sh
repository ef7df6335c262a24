#!/bin/sh
# Quality of the torch runtime's int8 weights (issue 42): the dense model and the shipped artifacts as they run by
# default, float32 against --quant int8 (dense at int8: every channel of a full-width int8 compact model), on the
# same examples: fidelity (NLL of the dense model's own greedy answers to 120 unread chat
# prompts, benchmarks/fidelity.sh's set) and held-out NLL of the SFT reference answers (slice a, 72 examples),
# then paired differences int8 - float32. KEEPS="75 50" (default). One thread; resumable (per-example cache).
#   sh benchmarks/quant_quality.sh            -> results/speed/int8_quality/
set -e
. benchmarks/heldout_slices.sh
OUT=${OUT:-results/speed/int8_quality}
FID="$IFPRUNE_CACHE/fidelity_unread_4000.jsonl"
.venv/bin/python -m ifprune.training.data_sft --out "$IFPRUNE_CACHE/sft_unread_4000.jsonl" --unread-after 4000 \
  --per-family 60 --families general,code
.venv/bin/python benchmarks/dense_answers.py "$IFPRUNE_CACHE/sft_unread_4000.jsonl" results/quality/loops/dense.jsonl "$FID"
for KEEP in ${KEEPS:-75 50}; do
  K=0.$KEEP; [ "$KEEP" = 50 ] && K=0.5
  ROWS="dense predictor:src/ifprune/artifacts/smollm2-135m-keep$KEEP"
  [ "$KEEP" = 50 ] && ROWS=predictor:src/ifprune/artifacts/smollm2-135m-keep$KEEP  # (dense: the keep-3/4 run's rows)
  for Q in float32 int8; do
    QF=""; [ "$Q" = int8 ] && QF="--quant int8"
    .venv/bin/ifprune eval compare --threads ${THREADS:-1} --suites nll --data "$FID" --limits nll=120 --no-progress \
      --no-plots --keeps $K --compensations none --selectors $ROWS $QF --out $OUT/fidelity$KEEP-$Q
    .venv/bin/ifprune eval compare --threads ${THREADS:-1} --suites nll --data "$(slice_file a)" --limits nll=72 \
      --no-progress --no-plots --keeps $K --compensations none --selectors $ROWS $QF --out $OUT/nll$KEEP-$Q
  done
  for S in fidelity nll; do
    for L in ifpruning+reselect-every32+dense-answer-prefill dense; do
      [ "$L" = dense ] && [ "$KEEP" = 50 ] && continue
      .venv/bin/python benchmarks/paired_nll.py $OUT/$S$KEEP-float32/results.json "$L" "$L" \
        --b-from $OUT/$S$KEEP-int8/results.json --out $OUT/paired_$S${KEEP}_${L%%+*}.json
    done
  done
done
