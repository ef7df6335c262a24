#!/bin/sh
# v21 (issue 43): v19's recipe (v10's predictor head over the base weights, a new LoRA, the dense model's finished
# answers with cross-entropy plus KL to the dense base, re-selection after 32 answer tokens) on the 2,402-row teacher
# snapshot (1,550 finished answers, 1.8x v19's) without the 50 answers that repeat themselves, one pass (375 batches
# of 4). Writes runs/teacher_v20 from the committed snapshot when missing. Run again to continue an interrupted run.
set -e
export IFPRUNE_CACHE=${IFPRUNE_CACHE:-$HOME/.cache/ifprune} HF_HUB_OFFLINE=1
T=runs/teacher_v20
if [ ! -f $T/header.json ]; then
  mkdir -p $T.tmp
  cp results/training/teacher/header.json $T.tmp/
  gunzip -c results/training/teacher/answers.jsonl.gz | head -n 2402 > $T.tmp/answers.jsonl
  mv $T.tmp $T
fi
if [ ! -f runs/v21/keep75-no-repeats/artifact/config.json ]; then
  .venv/bin/ifprune train configs/smollm2-keep75-v21-norepeat-cpu.yaml --threads ${THREADS:-1}
fi
cp runs/v21/keep75-no-repeats/log.jsonl results/training/v21/logs/keep75-no-repeats.jsonl
