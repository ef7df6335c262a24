#!/bin/sh
# The demo prompts on the shipped default once v10 was shipped (no flags: v10 keep 3/4, re-selection after
# 32 tokens, its default) and alongside: the same with --refresh 0, dense, v5 (the keep-3/4 artifact it
# replaced), the keep-1/2 artifact (--keep 0.5: v11 since it was shipped), GRIFFIN keep 1/2 (with compensation, its default);
# greedy, 64 new tokens. Raw JSON lines to results/training/v10/demo_default.jsonl.
set -e
V5=${1:-results/training/artifacts/smollm2-135m-keep75-v5}
exec .venv/bin/python benchmarks/demo_answers.py --out results/training/v10/demo_default.jsonl \
  --threads "${THREADS:-2}" --max-new-tokens 64 \
  --prompt "What is the capital of France?" --prompt "Give three tips for staying healthy." \
  --prompt "Write a Python function that returns the factorial of n." \
  --args=--no-refresh-every --args "--refresh 0" --args "--selector dense" --args "--checkpoint $V5" --args "--keep 0.5 --no-refresh-every" \
  --args "--selector griffin --keep 0.5"
