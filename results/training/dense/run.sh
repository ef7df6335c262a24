#!/bin/sh
# The fair dense reference of issue 14 (item 6): the dense model fine-tuned on the same data, order, steps,
# learning rates and LoRA (r=16, every projection) as the keep-3/4 IFPruning lineage (v2 stage 1 -> v2 stage 2
# -> v3 at 600 steps -> v4 -> v5 at keep 3/4: 1.64M tokens; the keep-1/2 lineage shares stages 1-2 and most of
# the rest: 1.57M). It is results/training/static/run.sh at keep 1.0: every channel kept (SoftTopK's mask is
# all ones at k = d), so only the LoRA weights train; the scores are inert (prior zero, nothing to warm start).
# bf16 autocast where the CPU has native bf16; no max_minutes.
# Interrupted? Run this again: a finished stage is not re-trained, an unfinished one resumes exactly.
# Log: runs/dense/train.out; per-step records in runs/dense/<stage>/log.jsonl (copied to logs/ as each ends).
set -e
ROOT=runs/dense LOGS=results/training/dense/logs OVERRIDES="--set keep=1.0 --set prior=zero"
. results/training/lineage.sh
stage pretrain keep50-v2-pretrain null --set warmstart_prompts=0
stage v2-sft keep50-v2-sft runs/dense/pretrain/artifact
stage v3-sft keep75-v3-sft runs/dense/v2-sft/artifact --set steps=600
stage v4-sft keep75-v4-sft runs/dense/v3-sft/artifact
stage v5-sft keep75-v5-sft runs/dense/v4-sft/artifact
