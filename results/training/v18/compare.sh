#!/bin/sh
# v18 (half on-policy) against v17 (what it continued), v10 (the shipped keep-3/4 artifact) and the dense model,
# as they run by default (re-selection every 32, dense-answer): fidelity on the dense model's answers to 120 unread
# chat prompts (benchmarks/fidelity.sh's set) and to the 139 validation prompts (per family; python -m
# ifprune.training.teacher --split validation), paired differences v18 - v17 and v18 - v10, then the loops of 128
# greedy tokens on the 120 unread prompts. One thread each; resumable (rows scored before come from the
# per-example cache). IFEval: ROWS=art ART=runs/v18/keep75-onpolicy/artifact NAME=v18 sh benchmarks/ifeval.sh
set -e
V18=runs/v18/keep75-onpolicy/artifact
V17=results/training/artifacts/smollm2-135m-keep75-v17
. benchmarks/heldout_slices.sh
require_artifacts "run results/training/v18/run.sh" $V18
require_artifacts "sh benchmarks/restore_artifacts.sh smollm2-135m-keep75-v17" $V17
D=results/training/v18
fidelity_sets
ROWS="dense predictor:src/ifprune/artifacts/smollm2-135m-keep75 predictor:$V17 predictor:$V18"
L="ifpruning+refresh-every32+dense-answer-prefill"
for SET in fidelity vfidelity; do
  DATA=$FID; N=120; [ $SET = vfidelity ] && DATA=$VFID && N=200
  .venv/bin/ifprune eval compare --threads ${THREADS:-1} --suites nll --data "$DATA" --limits nll=$N --no-progress \
    --no-plots --keeps 0.75 --compensations none --selectors $ROWS --out $D/$SET
  .venv/bin/python benchmarks/paired_nll.py $D/$SET/results.json "$L[smollm2-135m-keep75-v17]" "$L[keep75-onpolicy]" \
    --out $D/paired_${SET}_v17.json
  .venv/bin/python benchmarks/paired_nll.py $D/$SET/results.json "$L[smollm2-135m-keep75]" "$L[keep75-onpolicy]" \
    --out $D/paired_${SET}_v10.json
done
mkdir -p $D/loops
[ -s $D/loops/v18.json ] || .venv/bin/python benchmarks/greedy_loops.py --checkpoint $V18 \
  --data "$IFPRUNE_CACHE/sft_unread_4000.jsonl" --out $D/loops/v18 --max-new-tokens 128 --threads ${THREADS:-1}
