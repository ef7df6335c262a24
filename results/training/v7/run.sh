#!/bin/sh
# The v7 CPU runs, the v6 oracle-target A/B again with lr_predictor 1.5e-4 (v6: 1e-3): both arms continue the v5 keep-3/4 artifact on the
# same SFT batches (data positions 11160.., the second pass over the training set), same schedule and
# learning rates, one thread each, side by side on the 2 cores. Arm "oracle" adds the predictor's
# regression onto the GRIFFIN scores of the whole example (oracle_weight 1); arm "control" does not.
# Interrupted? Run this again: each run resumes from its checkpoint exactly (same batches).
# Logs: runs/v7/<arm>.out; per-step records in runs/v7/keep75-<arm>/log.jsonl.
set -e
mkdir -p runs/v7
for ARM in ${ARMS:-oracle control}; do
  .venv/bin/ifprune train configs/smollm2-keep75-v7-$ARM-cpu.yaml --threads 1 >> runs/v7/$ARM.out 2>&1 &
done
wait
