#!/bin/sh
# v19 (v10's predictor over the base weights with a new LoRA, distilled) against v10 (the shipped keep-3/4 artifact),
# v17 (v10 continued on the same data) and the dense model, as they run by default (re-selection every 32,
# dense-answer): fidelity on the dense model's answers to 120 unread chat prompts and to the 139 validation prompts
# (per family), paired differences v19 - v10 and v19 - v17, then the loops of 128 greedy tokens on the 120 unread
# prompts. One thread each; resumable (per-example cache). IFEval:
#   ROWS=art ART=runs/v19/keep75-base/artifact NAME=v19 sh benchmarks/ifeval.sh
set -e
V19=runs/v19/keep75-base/artifact
V17=results/training/artifacts/smollm2-135m-keep75-v17
. benchmarks/heldout_slices.sh
require_artifacts "run results/training/v19/run.sh" $V19
require_artifacts "sh benchmarks/restore_artifacts.sh smollm2-135m-keep75-v17" $V17
D=results/training/v19
fidelity_sets
ROWS=${ROWS:-"dense predictor:src/ifprune/artifacts/smollm2-135m-keep75 predictor:$V19 predictor:$V17"}
L="ifpruning+reselect-every32+dense-answer-prefill"
for SET in fidelity vfidelity; do
  DATA=$FID; N=120; [ $SET = vfidelity ] && DATA=$VFID && N=200
  .venv/bin/ifprune eval compare --threads ${THREADS:-1} --suites nll --data "$DATA" --limits nll=$N --no-progress \
    --no-plots --keeps 0.75 --compensations none --selectors $ROWS --out $D/$SET
  .venv/bin/python benchmarks/paired_nll.py $D/$SET/results.json "$L[smollm2-135m-keep75]" "$L[keep75-base]" \
    --out $D/paired_${SET}_v10.json
  case "$ROWS" in *$V17*) .venv/bin/python benchmarks/paired_nll.py $D/$SET/results.json \
    "$L[smollm2-135m-keep75-v17]" "$L[keep75-base]" --out $D/paired_${SET}_v17.json ;; esac
done
mkdir -p $D/loops
[ -s $D/loops/v19.json ] || .venv/bin/python benchmarks/greedy_loops.py --checkpoint $V19 \
  --data "$IFPRUNE_CACHE/sft_unread_4000.jsonl" --out $D/loops/v19 --max-new-tokens 128 --threads ${THREADS:-1}
