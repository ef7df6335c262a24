#!/bin/sh
# v17 against the shipped artifact it continued and the dense model, as they run by default (re-selection every 32,
# dense-answer prefill): fidelity (NLL of the dense model's own greedy answers to 120 unread chat prompts, general +
# code, benchmarks/fidelity.sh's set) and held-out NLL of the SFT reference answers (both validation slices,
# 144 examples), then paired differences v17 - shipped. KEEP=75 (default) or 50. One thread; resumable (rows the
# dense_answer compare scored are read back from the per-example cache).
set -e
KEEP=${KEEP:-75}
V17=runs/v17/keep$KEEP-fidelity/artifact
. benchmarks/heldout_slices.sh
require_artifacts "run results/training/v17/run.sh" $V17
D=results/training/v17
K=0.$KEEP; [ "$KEEP" = 50 ] && K=0.5
FID="$IFPRUNE_CACHE/fidelity_unread_4000.jsonl"
.venv/bin/python -m ifprune.training.data_sft --out "$IFPRUNE_CACHE/sft_unread_4000.jsonl" --unread-after 4000 \
  --per-family 60 --families general,code
.venv/bin/python benchmarks/dense_answers.py "$IFPRUNE_CACHE/sft_unread_4000.jsonl" results/quality/loops/dense.jsonl "$FID"
ROWS="dense predictor:src/ifprune/artifacts/smollm2-135m-keep$KEEP predictor:$V17"
.venv/bin/ifprune eval compare --threads ${THREADS:-1} --suites nll --data "$FID" --limits nll=120 --no-progress \
  --no-plots --keeps $K --compensations none --selectors $ROWS --out $D/fidelity$KEEP
THREADS=${THREADS:-1} KEEPS=$K nll_slices $D/nll$KEEP $ROWS
L="ifpruning+refresh-every32+dense-answer-prefill"
A="$L[smollm2-135m-keep$KEEP]" B="$L[keep$KEEP-fidelity]"
.venv/bin/python benchmarks/paired_nll.py $D/fidelity$KEEP/results.json "$A" "$B" --out $D/paired_fidelity$KEEP.json
.venv/bin/python benchmarks/paired_nll.py $D/nll$KEEP/results.json "$A" "$B" --pool $D/nll${KEEP}b/results.json \
  --out $D/paired_nll$KEEP.json
