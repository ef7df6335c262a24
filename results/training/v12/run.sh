#!/bin/sh
# v12: pure distillation to the dense model from v10 at keep 3/4 (configs/smollm2-keep75-v12-distill-cpu.yaml).
# One thread; run again to continue an interrupted run (it resumes exactly).
set -e
export IFPRUNE_CACHE=${IFPRUNE_CACHE:-$HOME/.cache/ifprune} HF_HUB_OFFLINE=1
.venv/bin/ifprune train configs/smollm2-keep75-v12-distill-cpu.yaml --threads ${THREADS:-1}
cp runs/v12/keep75-distill/log.jsonl results/training/v12/logs/keep75-distill.jsonl
