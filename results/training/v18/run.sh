#!/bin/sh
# v18 (issue 43): v17 keep 3/4 continued half on-policy (GKD: the pruned model's own greedy answers trained by the
# KL to the dense base; the other half v17's teacher answers), 150 batches of 4. Needs runs/teacher (see
# results/training/teacher/README.md to restore it). Run again to continue an interrupted run.
set -e
export IFPRUNE_CACHE=${IFPRUNE_CACHE:-$HOME/.cache/ifprune} HF_HUB_OFFLINE=1
if [ ! -f runs/teacher/header.json ]; then
  echo "runs/teacher is missing: restore it as results/training/teacher/README.md says" >&2
  exit 2
fi
if [ ! -f results/training/artifacts/smollm2-135m-keep75-v17/config.json ]; then
  echo "v18 starts from v17: sh benchmarks/restore_artifacts.sh smollm2-135m-keep75-v17" >&2
  exit 2
fi
if [ ! -f runs/v18/keep75-onpolicy/artifact/config.json ]; then
  .venv/bin/ifprune train configs/smollm2-keep75-v18-onpolicy-cpu.yaml --threads ${THREADS:-1}
fi
mkdir -p results/training/v18/logs
cp runs/v18/keep75-onpolicy/log.jsonl results/training/v18/logs/keep75-onpolicy.jsonl
