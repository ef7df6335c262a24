#!/usr/bin/env bash
# The CPU training run behind the shipped artifact (docs/training.md, results/training/README.md):
# stage 2 (SFT) at keep 1/2 for IFPruning (head warm-started on GRIFFIN scores) and for the
# learned-static baseline, same data / steps / recipe, then the validation report.
# 2 CPU cores: each run takes ~35 min; the report ~10 min.
set -euo pipefail
cd "$(dirname "$0")/../.."
export IFPRUNE_CACHE=${IFPRUNE_CACHE:-/tmp/ifpc} HF_HUB_OFFLINE=1
.venv/bin/ifprune train configs/smollm2-keep50-sft-cpu.yaml --set progress=false
.venv/bin/ifprune train configs/smollm2-keep50-static-sft-cpu.yaml --set progress=false
.venv/bin/python -m ifprune.training.report --predictor runs/cpu/keep50-sft-predictor/artifact \
    --static runs/cpu/keep50-sft-static/artifact --keep 0.5 --val-per-family 24 \
    --out results/training --name cpu_keep50
