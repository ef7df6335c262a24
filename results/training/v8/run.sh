#!/bin/sh
# v8: v5's recipe from the v5 keep-3/4 artifact on examples no earlier run read (data.skip_per_family
# 2000), one run on both cores. Interrupted? Run this again: it resumes from its checkpoint exactly.
# Log: runs/v8/keep75-sft.out; per-step records in runs/v8/keep75-sft/log.jsonl (copied to logs/).
set -e
mkdir -p runs/v8
.venv/bin/ifprune train configs/smollm2-keep75-v8-sft-cpu.yaml --threads 2 >> runs/v8/keep75-sft.out 2>&1
