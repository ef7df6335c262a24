#!/bin/sh
# v13: v11 (keep 1/2, refresh: 32, from the v5 keep-1/2 artifact) trained under compensated plans, one thread.
# Interrupted? Run this again: it resumes exactly (the calibration moments of the run's start are kept in
# runs/v13/keep50-compensated/compensation/). Log: runs/v13/keep50-compensated.out; per-step records in
# runs/v13/keep50-compensated/log.jsonl (copied to logs/).
set -e
export IFPRUNE_CACHE=${IFPRUNE_CACHE:-$HOME/.cache/ifprune} HF_HUB_OFFLINE=1
mkdir -p runs/v13
.venv/bin/ifprune train configs/smollm2-keep50-v13-compensated-cpu.yaml --threads ${THREADS:-1} >> runs/v13/keep50-compensated.out 2>&1
