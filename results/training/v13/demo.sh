#!/bin/sh
# The demo prompts on the v13 keep-1/2 artifact as it runs by default (re-selection after 32 tokens and
# calibration compensation, how it was trained), with --compensate none, and on v11 (the keep-1/2 artifact
# shipped before it); greedy, 64 new tokens. Raw JSON lines to results/training/v13/demo.jsonl.
set -e
export IFPRUNE_CACHE=${IFPRUNE_CACHE:-$HOME/.cache/ifprune} HF_HUB_OFFLINE=1
A=${1:-results/training/artifacts/smollm2-135m-keep50-v13}
V11=${V11:-src/ifprune/artifacts/smollm2-135m-keep50}
exec .venv/bin/python benchmarks/demo_answers.py --out results/training/v13/demo.jsonl --threads "${THREADS:-1}" \
  --max-new-tokens 64 \
  --prompt "What is the capital of France?" --prompt "Give three tips for staying healthy." \
  --prompt "Write a Python function that returns the factorial of n." \
  --args "--checkpoint $A --no-refresh-every" --args "--checkpoint $A --compensate none --no-refresh-every" --args "--checkpoint $V11 --no-refresh-every"
