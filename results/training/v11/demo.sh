#!/bin/sh
# The demo prompts on the v11 keep-1/2 artifact as it runs by default (re-selection after 32 tokens, how it
# was trained) and with --refresh 0, and on v5 (the keep-1/2 artifact shipped before it); greedy, 64 new
# tokens. Raw JSON lines to results/training/v11/demo.jsonl.
set -e
A=${1:-src/ifprune/artifacts/smollm2-135m-keep50}
V5=${V5:-results/training/artifacts/smollm2-135m-keep50-v5}
exec .venv/bin/python benchmarks/demo_answers.py --out results/training/v11/demo.jsonl --threads "${THREADS:-2}" \
  --max-new-tokens 64 \
  --prompt "What is the capital of France?" --prompt "Give three tips for staying healthy." \
  --prompt "Write a Python function that returns the factorial of n." \
  --args "--checkpoint $A --no-refresh-every" --args "--checkpoint $A --refresh 0" --args "--checkpoint $V5"
