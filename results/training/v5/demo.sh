#!/bin/sh
# The demo prompts on the shipped default (no flags: v5 keep 3/4) and alongside: dense, the keep-1/2
# artifact (--keep 0.5, v4), the v4 keep-3/4 artifact it replaced, GRIFFIN keep 1/2 (with compensation,
# its default); greedy, 48 new tokens. Raw JSON lines to results/training/v5/demo.jsonl.
set -e
V4=${1:-results/training/artifacts/smollm2-135m-keep75-v4}
exec .venv/bin/python benchmarks/demo_answers.py --out results/training/v5/demo.jsonl --threads "${THREADS:-2}" \
  --prompt "What is the capital of France?" --prompt "Give three tips for staying healthy." \
  --prompt "Write a Python function that returns the factorial of n." \
  --args "" --args "--selector dense" --args "--checkpoint $V4" --args "--keep 0.5" \
  --args "--selector griffin --keep 0.5"
