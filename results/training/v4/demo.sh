#!/bin/sh
# The demo prompts on the shipped default (no flags) and alongside: dense, each shipped artifact by
# --keep, the v2 artifact, GRIFFIN keep 1/2 (with compensation, its default); greedy, 48 new tokens.
# Raw JSON lines to results/training/v4/demo.jsonl. Usage: sh results/training/v4/demo.sh [V2_ARTIFACT]
set -e
V2=${1:-results/training/artifacts/smollm2-135m-keep50-v2}
exec .venv/bin/python benchmarks/demo_answers.py --out results/training/v4/demo.jsonl --threads "${THREADS:-2}" \
  --prompt "What is the capital of France?" --prompt "Give three tips for staying healthy." \
  --prompt "Write a Python function that returns the factorial of n." \
  --args "" --args "--selector dense" --args "--keep 0.75" --args "--keep 0.5" --args "--checkpoint $V2" \
  --args "--selector griffin --keep 0.5"
