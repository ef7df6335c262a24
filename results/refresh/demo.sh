#!/bin/sh
# The demo prompts on the shipped default (no flags: v5 keep 3/4) with and without re-selection after 32
# answer tokens, and the keep-1/2 artifact likewise; greedy, 128 new tokens (refresh needs answers
# longer than 32). Raw JSON lines (with timings, refresh_s included) to results/refresh/demo.jsonl.
set -e
exec .venv/bin/python benchmarks/demo_answers.py --out results/refresh/demo.jsonl --threads "${THREADS:-2}" \
  --max-new-tokens 128 \
  --prompt "What is the capital of France?" --prompt "Give three tips for staying healthy." \
  --prompt "Write a Python function that returns the factorial of n." \
  --args "" --args "--refresh 32" --args "--keep 0.5" --args "--keep 0.5 --refresh 32"
