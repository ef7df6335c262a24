#!/bin/sh
# Fidelity of one artifact under each way of re-selecting on the CPU, paired against its default (re-selection
# every 32 with a dense-answer prefill): "kept" (no full-model pass over the answer, selection.decoded) and no
# re-selection with a dense prefill of the prompt, on the dense model's answers to the 120 unread chat prompts
# (benchmarks/heldout_slices.sh: fidelity_sets). The speed side is benchmarks/cpu_speed.py --default-prefills.
# One thread unless THREADS; resumable (per-example cache). From the repository root:
#   sh benchmarks/reselect_modes.sh OUT [ARTIFACT_DIR] (default: the shipped keep-3/4 artifact; KEEP=0.75)
set -e
[ $# -ge 1 ] || { echo "usage: sh benchmarks/reselect_modes.sh OUT [ARTIFACT_DIR]" >&2; exit 2; }
D=$1; ART=${2:-src/ifprune/artifacts/smollm2-135m-keep75}
. benchmarks/heldout_slices.sh
require_artifacts "train or restore it first" "$ART"
fidelity_sets
.venv/bin/ifprune eval compare --threads ${THREADS:-1} --suites nll --data "$FID" --limits nll=120 --no-progress \
  --no-plots --keeps ${KEEP:-0.75} --compensations none --out $D/fidelity --selectors dense \
  "predictor+dense-answer-prefill:$ART" "predictor+kept-prefill:$ART" "predictor+reselect-off+dense-prefill:$ART"
A="ifpruning+reselect-every32+dense-answer-prefill"  # (the off row's label: ifpruning+dense-prefill)
.venv/bin/python benchmarks/paired_nll.py $D/fidelity/results.json "$A" "ifpruning+reselect-every32+kept-prefill" \
  --out $D/paired_kept.json
.venv/bin/python benchmarks/paired_nll.py $D/fidelity/results.json "$A" "ifpruning+dense-prefill" --out $D/paired_off.json
