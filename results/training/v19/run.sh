#!/bin/sh
# v19 (issue 43): v10's predictor over the base weights with a new LoRA, trained on the dense model's own answers
# (cross-entropy) plus KL to the dense base, 300 batches of 4. Needs runs/teacher (see results/training/teacher/
# README.md to restore the committed snapshot). Run again to continue an interrupted run.
set -e
export IFPRUNE_CACHE=${IFPRUNE_CACHE:-$HOME/.cache/ifprune} HF_HUB_OFFLINE=1
if [ ! -f runs/teacher/header.json ]; then
  echo "runs/teacher is missing: restore it as results/training/teacher/README.md says" >&2
  exit 2
fi
if [ ! -f runs/v19/keep75-base/artifact/config.json ]; then
  .venv/bin/ifprune train configs/smollm2-keep75-v19-base-cpu.yaml --threads ${THREADS:-1}
fi
cp runs/v19/keep75-base/log.jsonl results/training/v19/logs/keep75-base.jsonl
