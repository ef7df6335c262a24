#!/bin/sh
# The v6 CPU runs, an oracle-target A/B at keep 3/4: both arms continue the v5 keep-3/4 artifact on the
# same SFT batches (data positions 11160.., the second pass over the training set), same schedule and
# learning rates, one thread each, side by side on the 2 cores. Arm "oracle" adds the predictor's
# regression onto the GRIFFIN scores of the whole example (oracle_weight 1); arm "control" does not.
# (The first oracle attempt regressed onto the response tokens' scores alone; stopped at step 110,
# its log is logs/keep75-oracle-response-attempt.jsonl.)
# Interrupted? Run this again: each run resumes from its checkpoint exactly (same batches).
# Logs: runs/v6/<arm>.out; per-step records in runs/v6/keep75-<arm>/log.jsonl. V=v7 runs v7's arms.
set -e
V=${V:-v6}
mkdir -p runs/$V
for ARM in ${ARMS:-oracle control}; do
  .venv/bin/ifprune train configs/smollm2-keep75-$V-$ARM-cpu.yaml --threads 1 >> runs/$V/$ARM.out 2>&1 &
done
wait
