#!/bin/sh
# Held-out NLL for v16 (v10 continued with distillation to the dense SFT model, arm "teacher") against its
# control (the same batches without the KL), v10 (the shipped keep-3/4 default both start from), the dense SFT
# reference (the teacher) and the base dense model, on both held-out slices of results/refresh/ (144 examples).
# Every artifact runs as its recipe says (re-selection after 32 tokens). Per-example caches: rows scored before
# (dense, dense-sft, v10) are read back. Then pooled per-family NLL (x dense) and paired differences.
set -e
TEACHER=${TEACHER:-runs/v16/keep75-teacher/artifact}
CONTROL=${CONTROL:-runs/v16/keep75-control/artifact}
DENSE_SFT=${DENSE_SFT:-runs/dense/v5-sft/artifact}
for A in $TEACHER $CONTROL $DENSE_SFT; do
  [ -f $A/config.json ] || { echo "no artifact at $A: run results/training/v16/run.sh (and results/training/dense/run.sh)"; exit 2; }
done
. benchmarks/heldout_slices.sh
D=results/training/v16
nll_slices $D/compare dense "predictor:$DENSE_SFT" predictor:src/ifprune/artifacts/smollm2-135m-keep75 \
  "predictor:$CONTROL" "predictor:$TEACHER"
.venv/bin/python benchmarks/pooled_nll.py $D/compare/results.json $D/compareb/results.json --out $D/pooled.json
P=".venv/bin/python benchmarks/paired_nll.py"
V10="ifpruning+refresh32[smollm2-135m-keep75]"
$P $D/compare/results.json "ifpruning+refresh32[keep75-control]" "ifpruning+refresh32[keep75-teacher]" \
  --pool $D/compareb/results.json --out $D/paired_teacher_vs_control.json
$P $D/compare/results.json "$V10" "ifpruning+refresh32[keep75-teacher]" --pool $D/compareb/results.json \
  --out $D/paired_teacher_vs_v10.json
$P $D/compare/results.json "$V10" "ifpruning+refresh32[keep75-control]" --pool $D/compareb/results.json \
  --out $D/paired_control_vs_v10.json
