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
ARM="ifpruning+refresh32[keep$KEEP-teacher]" CTRL="ifpruning+refresh32[keep$KEEP-control]"
START="ifpruning+refresh32[smollm2-135m-keep$KEEP]"
# output names: keep 3/4's came first (compare, pooled.json, paired_*_vs_v10), keep 1/2's carry its keep
if [ "$KEEP" = 75 ]; then OUT=$D/compare POOLED=$D/pooled.json PAIRED=$D/paired_ V=v10
else OUT=$D/compare$KEEP POOLED=$D/pooled$KEEP.json PAIRED=$D/paired_keep${KEEP}_ V=v11; fi
nll_slices $OUT dense "predictor:$DENSE_SFT" predictor+refresh-once:src/ifprune/artifacts/smollm2-135m-keep$KEEP \
  "predictor+refresh-once:$CONTROL" "predictor+refresh-once:$TEACHER"
.venv/bin/python benchmarks/pooled_nll.py $OUT/results.json ${OUT}b/results.json --out $POOLED
$P $OUT/results.json "$CTRL" "$ARM" --pool ${OUT}b/results.json --out ${PAIRED}teacher_vs_control.json
$P $OUT/results.json "$START" "$ARM" --pool ${OUT}b/results.json --out ${PAIRED}teacher_vs_$V.json
$P $OUT/results.json "$START" "$CTRL" --pool ${OUT}b/results.json --out ${PAIRED}control_vs_$V.json
