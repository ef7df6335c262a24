#!/bin/sh
# v15: fine-tune dense first, then prune: v10's own config (the same 300 batches, refresh 32, v5's head) from the dense
# SFT reference's LoRA (results/training/dense/run.sh must have run: runs/dense/v5-sft/artifact) under the v5
# keep-3/4 predictor head. First the starting point itself as an artifact (one step at learning rate 0: the
# dense SFT weights under v5's head, untrained together), then the 300-step run. Both cores.
# Interrupted? Run this again: a finished run is not re-trained, an unfinished one resumes exactly.
# Log: runs/v15/train.out; per-step records in runs/v15/<run>/log.jsonl (copied to logs/).
set -e
THREADS=${THREADS:-2}
# v10's run with the LLM from the dense SFT LoRA; no max_minutes (v10's 80 was a session limit)
C="configs/smollm2-keep75-v10-refresh-cpu.yaml --set init_llm_from=runs/dense/v5-sft/artifact --set max_minutes=null"
[ -f runs/dense/v5-sft/artifact/config.json ] || { echo "no dense SFT artifact at runs/dense/v5-sft/artifact: run results/training/dense/run.sh"; exit 2; }
mkdir -p runs/v15 results/training/v15/logs
.venv/bin/ifprune train $C --threads $THREADS --set steps=1 --set lr_llm=0 --set lr_predictor=0 --set eval_every=0 \
  --set output_dir=runs/v15/start >> runs/v15/train.out 2>&1
.venv/bin/ifprune train $C --set output_dir=runs/v15/keep75-dsft --threads $THREADS >> runs/v15/train.out 2>&1
cp runs/v15/keep75-dsft/log.jsonl results/training/v15/logs/keep75-dsft.jsonl
