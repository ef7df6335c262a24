#!/bin/sh
# The v4 CPU runs: SFT continued from the shipped v3 artifacts (keep 1/2 and keep 3/4) on SFT examples
# no earlier run read, one thread each, side by side on the 2 cores.
# Interrupted? Run this again: each run resumes from its checkpoint exactly (same batches).
# Logs: runs/v4/keep50.out, runs/v4/keep75.out; per-step records in runs/v4/keep*-sft/log.jsonl.
set -e
mkdir -p runs/v4
for K in ${KEEPS:-50 75}; do
  .venv/bin/ifprune train configs/smollm2-keep$K-v4-sft-cpu.yaml --threads 1 >> runs/v4/keep$K.out 2>&1 &
done
wait
