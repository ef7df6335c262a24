#!/bin/sh
# The v5 CPU runs, a distillation A/B at keep 3/4 (the default): both arms continue the shipped v4
# keep-3/4 artifact (commit 0af65a1) on the same 2,560 SFT examples (1,750 no earlier run read, then 810 of a second pass over the 10,350), in the same
# order with the same schedule, one thread each, side by side on the 2 cores. Arm "sft" is cross-entropy
# only; arm "distill" adds KL to the dense base model's logits (weight 1).
# Interrupted? Run this again: each run resumes from its checkpoint exactly (same batches).
# Logs: runs/v5/<arm>.out; per-step records in runs/v5/keep75-<arm>/log.jsonl.
set -e
mkdir -p runs/v5
for ARM in ${ARMS:-sft distill}; do
  .venv/bin/ifprune train configs/smollm2-keep75-v5-$ARM-cpu.yaml --threads 1 >> runs/v5/$ARM.out 2>&1 &
done
wait
