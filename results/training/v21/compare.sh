#!/bin/sh
# v21 against v19 (the same recipe on 0.55x the teacher answers, repeating ones included), v10 (the shipped keep-3/4
# artifact) and the dense model, as they run by default: fidelity on the unread and validation prompts, paired
# v21 - v19 and v21 - v10, and loops (benchmarks/fidelity_compare.sh); then v21 with the calibration refit at
# inference, paired with v21 without. One thread each unless THREADS; resumable (per-example cache). IFEval:
#   ROWS=art ART=runs/v21/keep75-no-repeats/artifact NAME=v21 sh benchmarks/ifeval.sh
set -e
V21=runs/v21/keep75-no-repeats/artifact
D=results/training/v21
sh benchmarks/fidelity_compare.sh $D v21=$V21 v10=src/ifprune/artifacts/smollm2-135m-keep75 \
  v19=runs/v19/keep75-base/artifact
. benchmarks/heldout_slices.sh
# the same artifact with the calibration refit of the kept channels' down projection at inference (it was trained
# without one): is what remains of the gap an output mismatch a linear refit removes?
.venv/bin/ifprune eval compare --threads ${THREADS:-1} --suites nll --data "$FID" --limits nll=120 --no-progress \
  --no-plots --keeps 0.75 --compensations calibration --selectors dense predictor:$V21 --out $D/fidelity_calibration
.venv/bin/python benchmarks/paired_nll.py $D/fidelity/results.json \
  "ifpruning+reselect-every32+dense-answer-prefill[keep75-no-repeats]" \
  "ifpruning+reselect-every32+dense-answer-prefill" --b-from $D/fidelity_calibration/results.json \
  --out $D/paired_fidelity_calibration.json
