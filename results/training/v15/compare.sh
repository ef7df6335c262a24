#!/bin/sh
# Held-out NLL for v15 (dense SFT first, then pruned: run.sh here) against its control v10 (the shipped keep-3/4
# default: same head at the start, same batches), its own starting point (v15-start: the dense SFT weights under
# v5's head, untrained together), the dense SFT reference and the base dense model, on both held-out slices of
# results/refresh/ (144 examples). Every artifact runs as its recipe says (re-selection after 32 tokens).
# Per-example caches: rows scored before (dense, dense-sft, v10) are read back. Then pooled per-family NLL
# (x dense, x dense-sft) and paired differences: v15 - v10, v15 - dense-sft.
set -e
V15=${V15:-runs/v15/keep75-dsft/artifact}
START=${START:-runs/v15/start/artifact}
DENSE_SFT=${DENSE_SFT:-runs/dense/v5-sft/artifact}
. benchmarks/heldout_slices.sh
require_artifacts "run results/training/v15/run.sh (and results/training/dense/run.sh)" $V15 $START $DENSE_SFT
D=results/training/v15
nll_slices $D/compare dense "predictor:$DENSE_SFT" predictor+refresh-once:src/ifprune/artifacts/smollm2-135m-keep75 \
  "predictor+refresh-once:$START" "predictor+refresh-once:$V15"
.venv/bin/python benchmarks/pooled_nll.py $D/compare/results.json $D/compareb/results.json --reference dense-sft \
  --out $D/pooled.json
P=".venv/bin/python benchmarks/paired_nll.py"
$P $D/compare/results.json "ifpruning+refresh32[smollm2-135m-keep75]" "ifpruning+refresh32[keep75-dsft]" \
  --pool $D/compareb/results.json --out $D/paired_v15_vs_v10.json
$P $D/compare/results.json dense-sft "ifpruning+refresh32[keep75-dsft]" --pool $D/compareb/results.json \
  --out $D/paired_v15_vs_dense_sft.json
