#!/bin/sh
# The v4 CPU run: SFT continued from the shipped v3 keep-1/2 artifact on unseen examples, one thread.
# Interrupted? Run this again: the run resumes from its checkpoint exactly (same batches).
# Log: runs/v4/keep50.out; per-step records in runs/v4/keep50-sft/log.jsonl.
set -e
mkdir -p runs/v4
.venv/bin/ifprune train configs/smollm2-keep50-v4-sft-cpu.yaml --threads 1 >> runs/v4/keep50.out 2>&1
