#!/bin/sh
# v16: v10 (keep 3/4; KEEP=50: v11, keep 1/2) continued with distillation to the dense SFT model (arm "teacher")
# and without it (arm "control"), the same 300 batches. One run after the other on THREADS threads (default 2); run again to continue
# an interrupted run (each resumes exactly; a finished arm is not re-trained). ARMS="teacher" runs one arm.
set -e
KEEP=${KEEP:-75}
export IFPRUNE_CACHE=${IFPRUNE_CACHE:-$HOME/.cache/ifprune} HF_HUB_OFFLINE=1
if [ ! -f runs/dense/v5-sft/artifact/config.json ]; then
  echo "the teacher runs/dense/v5-sft/artifact is missing: train it first with sh results/training/dense/run.sh (~90 min)" >&2
  exit 2
fi
for arm in ${ARMS:-teacher control}; do
  if [ -f runs/v16/keep$KEEP-$arm/artifact/config.json ]; then echo "keep$KEEP-$arm: done (runs/v16/keep$KEEP-$arm/artifact)"; continue; fi
  .venv/bin/ifprune train configs/smollm2-keep$KEEP-v16-$arm-cpu.yaml --threads ${THREADS:-2}
  cp runs/v16/keep$KEEP-$arm/log.jsonl results/training/v16/logs/keep$KEEP-$arm.jsonl
done
