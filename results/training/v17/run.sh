#!/bin/sh
# v17 (issue 43): the shipped artifacts (v10 keep 3/4, v11 keep 1/2) continued on the dense model's own answers
# (cross-entropy) plus KL to the dense base, 300 batches of 4. Needs runs/teacher (see results/training/teacher/
# README.md to restore the committed snapshot). Run again to continue an interrupted run; a finished keep is skipped.
set -e
export IFPRUNE_CACHE=${IFPRUNE_CACHE:-$HOME/.cache/ifprune} HF_HUB_OFFLINE=1
if [ ! -f runs/teacher/header.json ]; then
  echo "runs/teacher is missing: restore it as results/training/teacher/README.md says" >&2
  exit 2
fi
for K in ${KEEPS:-75 50}; do
  if [ -f runs/v17/keep$K-fidelity/artifact/config.json ]; then echo "keep$K: done"; continue; fi
  .venv/bin/ifprune train configs/smollm2-keep$K-v17-fidelity-cpu.yaml --threads ${THREADS:-1}
  cp runs/v17/keep$K-fidelity/log.jsonl results/training/v17/logs/keep$K-fidelity.jsonl
done
