#!/bin/sh
# The committed comparison table for the default model (SmolLM2-135M-Instruct). Resumable: per-example
# results are cached under $IFPRUNE_CACHE/eval, so re-running after an interruption continues.
# Limits are tiny because the machine is 2 shared CPU cores; they are stated in results.md.
export IFPRUNE_CACHE=${IFPRUNE_CACHE:-/tmp/ifpc} HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1
exec .venv/bin/ifprune eval compare \
  --suites nll mc ifeval humaneval mbpp gsm8k \
  --selectors dense random magnitude wanda griffin \
  --keeps 0.5 0.333 \
  --calibration ../shared/data/pretrain/llamafactory/c4_demo.jsonl \
  --limits nll=16 mc=3 ifeval=2 humaneval=2 mbpp=2 gsm8k=2 \
  --max-new-tokens 96 --no-progress \
  --out results/eval/default "$@"
