#!/bin/sh
# v14: v10 (keep 3/4, refresh: 32, from the v5 keep-3/4 artifact) trained under compensated plans, one thread.
# Interrupted? Run this again: it resumes exactly (the calibration moments of the run's start are kept in
# runs/v14/keep75-compensated/compensation/). Log: runs/v14/keep75-compensated.out; per-step records in
# runs/v14/keep75-compensated/log.jsonl (copied to logs/).
set -e
export IFPRUNE_CACHE=${IFPRUNE_CACHE:-$HOME/.cache/ifprune} HF_HUB_OFFLINE=1
mkdir -p runs/v14
.venv/bin/ifprune train configs/smollm2-keep75-v14-compensated-cpu.yaml --threads ${THREADS:-1} >> runs/v14/keep75-compensated.out 2>&1
