#!/bin/sh
# v10: v8's run (from the v5 keep-3/4 artifact, examples no run had read) trained under re-selection after
# 32 answer tokens (refresh: 32), both cores. Interrupted? Run this again: it resumes exactly.
# Log: runs/v10/keep75-refresh.out; per-step records in runs/v10/keep75-refresh/log.jsonl (copied to logs/).
set -e
mkdir -p runs/v10
.venv/bin/ifprune train configs/smollm2-keep75-v10-refresh-cpu.yaml --threads 2 >> runs/v10/keep75-refresh.out 2>&1
