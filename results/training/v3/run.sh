#!/bin/sh
# The v3 CPU runs: SFT continued from the v2 keep-1/2 artifact, at keep 1/2 and at keep 3/4, side by
# side on 2 cores (one thread each: two 1-thread runs train faster in total than one 2-thread run here).
# Interrupted? Run this again: each run resumes from its checkpoint exactly (same batches).
# Logs: runs/v3/keep50.out, runs/v3/keep75.out; per-step records in runs/v3/keep*-sft/log.jsonl.
set -e
mkdir -p runs/v3
for K in 50 75; do
  .venv/bin/ifprune train configs/smollm2-keep$K-v3-sft-cpu.yaml --threads 1 >> runs/v3/keep$K.out 2>&1 &
done
wait
