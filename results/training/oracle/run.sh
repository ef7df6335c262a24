#!/bin/sh
# Is the selector or the pruned weights the limit, on the shipped artifacts? Held-out NLL (48 examples, the first 8
# per family) under the predictor's masks (no re-selection) against masks from GRIFFIN over the whole example,
# prompt and answer (an oracle no selector can run: it sees the answer), the tuned weights with every channel,
# and the base model (benchmarks/oracle_masks.py). 2 threads.
set -e
export HF_HUB_OFFLINE=1
for K in 50 75; do
  case $K in 50) C=configs/smollm2-keep50-v11-refresh-cpu.yaml ;; 75) C=configs/smollm2-keep75-v10-refresh-cpu.yaml ;; esac
  .venv/bin/python benchmarks/oracle_masks.py --config $C --artifact src/ifprune/artifacts/smollm2-135m-keep$K \
    --per-family 8 --threads ${THREADS:-2} --modes predictor oracle_in_training \
    --out results/training/oracle/keep$K.json
done
