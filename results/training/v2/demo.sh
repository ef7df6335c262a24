#!/bin/sh
# The demo prompts on the shipped default (no flags) and alongside: the default with compensation,
# GRIFFIN keep 1/2 (with compensation, its default) and the v1 artifact (greedy, 48 new tokens).
# Raw JSON lines to results/training/v2/demo.jsonl. Usage: sh results/training/v2/demo.sh [V1_ARTIFACT]
# (Recorded when v2 was the default: today the no-flag rows run the v3 default; pass
# "--checkpoint results/training/artifacts/smollm2-135m-keep50-v2" to rerun v2 itself.)
set -e
V1=${1:-results/training/artifacts/smollm2-135m-keep50-v1}
exec .venv/bin/python benchmarks/demo_answers.py --out results/training/v2/demo.jsonl --threads "${THREADS:-2}" \
  --prompt "What is the capital of France?" --prompt "Give three tips for staying healthy." \
  --args "" --args "--compensate calibration" --args "--selector griffin --keep 0.5" --args "--checkpoint $V1"
