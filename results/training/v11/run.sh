#!/bin/sh
# v11: v9's LoRA arm (from the v5 keep-1/2 artifact, examples no earlier keep-1/2 run read) trained under
# re-selection after 32 answer tokens (refresh: 32), one thread. Interrupted? Run this again: it resumes exactly.
# Log: runs/v11/keep50-refresh.out; per-step records in runs/v11/keep50-refresh/log.jsonl (copied to logs/).
set -e
mkdir -p runs/v11
.venv/bin/ifprune train configs/smollm2-keep50-v11-refresh-cpu.yaml --threads 1 >> runs/v11/keep50-refresh.out 2>&1
