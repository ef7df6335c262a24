#!/bin/sh
# Learned-static at the IFPruning artifacts' budget (keep 1/2, then keep 3/4 below): the IFPruning lineage's
# own configs, v2 (stage 1, stage 2) -> v3 -> v4 -> v5, run with `method: static`, so data, order, steps and
# learning rates are theirs by construction (keep 1/2: 1.57M tokens; keep 3/4: 1.64M). Overrides: each stage continues the previous static stage (init_from) into
# runs/static/; stage 1's scores start at the mean GRIFFIN scores of the 800 chunks the predictor's warm start
# read (prior_prompts) instead of a warm start; v3's stage is 600 steps (v3 stopped at 600 of its 700 planned);
# no max_minutes (the lineage's were session limits). bf16 autocast where the CPU has native bf16.
# Interrupted? Run this again: a finished stage is not re-trained, an unfinished one resumes exactly.
# Log: runs/static/train.out; per-step records in runs/static/<stage>/log.jsonl (copied to logs/ as each ends).
set -e
ROOT=runs/static LOGS=results/training/static/logs OVERRIDES=
. results/training/lineage.sh
stage pretrain keep50-v2-pretrain null --set warmstart_prompts=0 --set prior_prompts=800
stage v2-sft keep50-v2-sft runs/static/pretrain/artifact
stage v3-sft keep50-v3-sft runs/static/v2-sft/artifact --set steps=600
stage v4-sft keep50-v4-sft runs/static/v3-sft/artifact
stage v5-sft keep50-v5-sft runs/static/v4-sft/artifact
# keep 3/4: the keep-3/4 lineage (v3 -> v4 -> v5 at keep 0.75, continued from v2's keep-1/2 artifact, as the
# IFPruning one was; v3 stopped at 600 of 700 steps there too): 1.19M tokens more on top of stages 1-2.
stage v3-keep75 keep75-v3-sft runs/static/v2-sft/artifact --set steps=600
stage v4-keep75 keep75-v4-sft runs/static/v3-keep75/artifact
stage v5-keep75 keep75-v5-sft runs/static/v4-keep75/artifact
