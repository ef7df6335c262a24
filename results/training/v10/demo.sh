#!/bin/sh
# The demo prompts on the v10 keep-3/4 artifact with --refresh 32 (how it was trained to run) and without;
# greedy, 128 new tokens. Raw JSON lines to results/training/v10/demo.jsonl.
set -e
A=${1:-src/ifprune/artifacts/smollm2-135m-keep75}
exec .venv/bin/python benchmarks/demo_answers.py --out results/training/v10/demo.jsonl --threads "${THREADS:-2}" \
  --max-new-tokens 128 \
  --prompt "What is the capital of France?" --prompt "Give three tips for staying healthy." \
  --prompt "Write a Python function that returns the factorial of n." \
  --args "--checkpoint $A --refresh 32" --args "--checkpoint $A --no-refresh-every"
