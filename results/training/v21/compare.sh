#!/bin/sh
# v21 against v19 (the same recipe on 0.55x the teacher answers, repeating ones included), v10 (the shipped keep-3/4
# artifact) and the dense model, as they run by default (re-selection every 32, dense-answer prefill): fidelity on
# the dense model's answers to 120 unread chat prompts and to the 139 validation prompts (per family), paired
# differences v21 - v19 and v21 - v10, then the loops of 128 greedy tokens on the 120 unread prompts. One thread
# each unless THREADS; resumable (per-example cache). IFEval:
#   ROWS=art ART=runs/v21/keep75-no-repeats/artifact NAME=v21 sh results/quality/ifeval.sh
set -e
V21=runs/v21/keep75-no-repeats/artifact
V19=runs/v19/keep75-base/artifact
. benchmarks/heldout_slices.sh
require_artifacts "run results/training/v21/run.sh" $V21
require_artifacts "run results/training/v19/run.sh" $V19
D=results/training/v21
fidelity_sets
ROWS=${ROWS:-"dense predictor:src/ifprune/artifacts/smollm2-135m-keep75 predictor:$V19 predictor:$V21"}
L="ifpruning+reselect-every32+dense-answer-prefill"
for SET in fidelity vfidelity; do
  DATA=$FID; N=120; [ $SET = vfidelity ] && DATA=$VFID && N=200
  .venv/bin/ifprune eval compare --threads ${THREADS:-1} --suites nll --data "$DATA" --limits nll=$N --no-progress \
    --no-plots --keeps 0.75 --compensations none --selectors $ROWS --out $D/$SET
  .venv/bin/python benchmarks/paired_nll.py $D/$SET/results.json "$L[smollm2-135m-keep75]" "$L[keep75-no-repeats]" \
    --out $D/paired_${SET}_v10.json
  .venv/bin/python benchmarks/paired_nll.py $D/$SET/results.json "$L[keep75-base]" "$L[keep75-no-repeats]" \
    --out $D/paired_${SET}_v19.json
done
mkdir -p $D/loops
[ -s $D/loops/v21.json ] || .venv/bin/python benchmarks/greedy_loops.py --checkpoint $V21 \
  --data "$IFPRUNE_CACHE/sft_unread_4000.jsonl" --out $D/loops/v21 --max-new-tokens 128 --threads ${THREADS:-1}
# the same artifact with the calibration refit of the kept channels' down projection at inference (it was trained
# without one): is what remains of the gap an output mismatch a linear refit removes?
.venv/bin/ifprune eval compare --threads ${THREADS:-1} --suites nll --data "$FID" --limits nll=120 --no-progress \
  --no-plots --keeps 0.75 --compensations calibration --selectors dense predictor:$V21 --out $D/fidelity_calibration
.venv/bin/python benchmarks/paired_nll.py $D/fidelity/results.json "$L[keep75-no-repeats]" \
  "ifpruning+reselect-every32+dense-answer-prefill" --b-from $D/fidelity_calibration/results.json \
  --out $D/paired_fidelity_calibration.json
