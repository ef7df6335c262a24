#!/bin/sh
# The demo prompts under the default since 2026-12-05 (no flags: v10 keep 3/4, re-selection every 32 answer tokens,
# dense prefill; --keep 0.5: v11 the same) beside the previous default (--no-refresh-every: one re-selection after
# 32, pruned prefill), dense, and GRIFFIN keep 1/2 (with compensation, its default); greedy, 64 and 128 new tokens.
# Raw JSON lines to results/refresh/every/demo.jsonl and demo128.jsonl.
set -e
for N in 64 128; do
  OUT=results/refresh/every/demo.jsonl; [ $N = 64 ] || OUT=results/refresh/every/demo$N.jsonl
  .venv/bin/python benchmarks/demo_answers.py --out $OUT --threads "${THREADS:-1}" --max-new-tokens $N \
    --prompt "What is the capital of France?" --prompt "Give three tips for staying healthy." \
    --prompt "Write a Python function that returns the factorial of n." \
    --args "" --args=--no-refresh-every --args "--keep 0.5" --args "--keep 0.5 --no-refresh-every" \
    --args "--selector dense" --args "--selector griffin --keep 0.5"
done
