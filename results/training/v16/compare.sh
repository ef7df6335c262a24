#!/bin/sh
# Held-out NLL for v16 on both held-out slices of results/refresh/ (144 examples); every artifact runs as its
# recipe says (re-selection after 32 tokens); rows scored before (dense, dense-sft, v10, v11) are read back from
# the per-example caches. Then pooled per-family NLL (x dense) and paired differences.
# KEEP=75 (default): the teacher arm (v10 continued with distillation to the dense SFT model) against its control
# (the same batches without the KL), v10 (both start from it), the dense SFT reference (the teacher), base dense.
# KEEP=50: the same at keep 1/2, against v11 (both arms start from it) -> compare50*, pooled50, paired_keep50_*.
set -e
KEEP=${KEEP:-75}
TEACHER=${TEACHER:-runs/v16/keep$KEEP-teacher/artifact}
CONTROL=${CONTROL:-runs/v16/keep$KEEP-control/artifact}
DENSE_SFT=${DENSE_SFT:-runs/dense/v5-sft/artifact}
. benchmarks/heldout_slices.sh
require_artifacts "run results/training/v16/run.sh (KEEP=$KEEP; and results/training/dense/run.sh)" $TEACHER $CONTROL $DENSE_SFT
D=results/training/v16
P=".venv/bin/python benchmarks/paired_nll.py"
ARM="ifpruning+refresh32[keep$KEEP-teacher]"
if [ "$KEEP" = 75 ]; then
  nll_slices $D/compare dense "predictor:$DENSE_SFT" predictor:src/ifprune/artifacts/smollm2-135m-keep75 \
    "predictor:$CONTROL" "predictor:$TEACHER"
  .venv/bin/python benchmarks/pooled_nll.py $D/compare/results.json $D/compareb/results.json --out $D/pooled.json
  V10="ifpruning+refresh32[smollm2-135m-keep75]"
  $P $D/compare/results.json "ifpruning+refresh32[keep75-control]" "$ARM" \
    --pool $D/compareb/results.json --out $D/paired_teacher_vs_control.json
  $P $D/compare/results.json "$V10" "$ARM" --pool $D/compareb/results.json --out $D/paired_teacher_vs_v10.json
  $P $D/compare/results.json "$V10" "ifpruning+refresh32[keep75-control]" --pool $D/compareb/results.json \
    --out $D/paired_control_vs_v10.json
else
  nll_slices $D/compare50 dense "predictor:$DENSE_SFT" predictor:src/ifprune/artifacts/smollm2-135m-keep50 \
    "predictor:$TEACHER" "predictor:$CONTROL"
  .venv/bin/python benchmarks/pooled_nll.py $D/compare50/results.json $D/compare50b/results.json --out $D/pooled50.json
  V11="ifpruning+refresh32[smollm2-135m-keep50]"
  $P $D/compare50/results.json "ifpruning+refresh32[keep50-control]" "$ARM" --pool $D/compare50b/results.json \
    --out $D/paired_keep50_teacher_vs_control.json
  $P $D/compare50/results.json "$V11" "$ARM" --pool $D/compare50b/results.json --out $D/paired_keep50_teacher_vs_v11.json
  $P $D/compare50/results.json "$V11" "ifpruning+refresh32[keep50-control]" --pool $D/compare50b/results.json \
    --out $D/paired_keep50_control_vs_v11.json
fi
