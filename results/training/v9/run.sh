#!/bin/sh
# v9 A/B at keep 1/2 from the v5 keep-1/2 artifact on examples no earlier run read: LoRA r=16 (v5's
# recipe) against every LLM weight trained, the same batches, one thread each, side by side.
# Interrupted? Run this again: each arm resumes from its checkpoint exactly.
# Logs: runs/v9/keep50-{lora,full}.out; per-step records in runs/v9/keep50-{lora,full}/log.jsonl (copied to logs/).
set -e
mkdir -p runs/v9
for arm in lora full; do
  .venv/bin/ifprune train configs/smollm2-keep50-v9-$arm-cpu.yaml --threads 1 >> runs/v9/keep50-$arm.out 2>&1 &
done
wait
