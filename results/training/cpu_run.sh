#!/usr/bin/env bash
# The CPU training run behind the shipped artifact (docs/training.md, results/training/README.md):
# stage 2 (SFT) at keep 1/2 for IFPruning (head warm-started on GRIFFIN scores) and for the
# learned-static baseline (same data, steps and recipe), then the validation report.
# On 2 CPU cores: ~34 + ~25 min of training and ~10 min of evaluation at keep 1/2; about half that at 1/3.
set -euo pipefail
cd "$(dirname "$0")/../.."
export IFPRUNE_CACHE=${IFPRUNE_CACHE:-/tmp/ifpc} HF_HUB_OFFLINE=1
.venv/bin/ifprune train configs/smollm2-keep50-sft-cpu.yaml --set progress=false
.venv/bin/ifprune train configs/smollm2-keep50-static-sft-cpu.yaml --set progress=false
# ship (v1; v2 replaced it as the package default: results/training/v2): both next to the results
ART=results/training/artifacts/smollm2-135m-keep50-v1
STATIC=results/training/artifacts/smollm2-135m-keep50-static
mkdir -p "$ART" "$(dirname "$STATIC")"
cp -r runs/cpu/keep50-sft-predictor/artifact/. "$ART"/
rm -rf "$STATIC" && cp -r runs/cpu/keep50-sft-static/artifact "$STATIC"
.venv/bin/python -m ifprune.training.report --predictor "$ART" --static "$STATIC" --keep 0.5 \
    --val-per-family 24 --out results/training --name cpu_keep50
# keep 1/3: 150 steps each (half the keep-1/2 budget), artifacts not shipped
.venv/bin/ifprune train configs/smollm2-keep33-sft-cpu.yaml --set progress=false
.venv/bin/ifprune train configs/smollm2-keep33-static-sft-cpu.yaml --set progress=false
.venv/bin/python -m ifprune.training.report --predictor runs/cpu/keep33-sft-predictor/artifact \
    --static runs/cpu/keep33-sft-static/artifact --keep 0.333 --val-per-family 24 \
    --out results/training --name cpu_keep33

# self-distillation ablation at keep 1/2 (same data, order and steps as the shipped run, plus KL to the
# dense model; not shipped)
.venv/bin/ifprune train configs/smollm2-keep50-sft-distill-cpu.yaml --set progress=false
.venv/bin/python -m ifprune.training.report --predictor runs/cpu/keep50-sft-distill/artifact \
    --keep 0.5 --val-per-family 24 --out results/training --name cpu_keep50_distill

# backbone read-out ablation at keep 1/2: the predictor reads the hidden state after 8 of 30 layers
# (selection ~1/3 of the full pass, results/bench/smollm2-135m-cpu-predictor-8layers.md); not shipped
.venv/bin/ifprune train configs/smollm2-keep50-sft-bb8-cpu.yaml --set progress=false
.venv/bin/python -m ifprune.training.report --predictor runs/cpu/keep50-sft-predictor-bb8/artifact \
    --keep 0.5 --val-per-family 24 --out results/training --name cpu_keep50_bb8
.venv/bin/ifprune bench --threads 1 --selector predictor --checkpoint runs/cpu/keep50-sft-predictor-bb8/artifact \
    --out results/bench --name smollm2-135m-cpu-predictor-bb8
