#!/bin/sh
# Learned-static at the keep-1/2 artifacts' budget: five stages mirroring the IFPruning lineage
# v2 (stage 1, stage 2) -> v3 -> v4 -> v5, same data, order, steps and learning rates (1.57M tokens).
# Interrupted? Run this again: a finished stage is not re-trained, an unfinished one resumes exactly.
# Log: runs/static/train.out; per-step records in runs/static/<stage>/log.jsonl (copied to logs/ as each ends).
set -e
THREADS=${THREADS:-2}
mkdir -p runs/static results/training/static/logs
for stage in 1-pretrain 2-v2-sft 3-v3-sft 4-v4-sft 5-v5-sft; do
  .venv/bin/ifprune train configs/smollm2-keep50-static-$stage-cpu.yaml --threads "$THREADS" >> runs/static/train.out 2>&1
  name=${stage#*-}
  cp runs/static/$name/log.jsonl results/training/static/logs/$name.jsonl
done
