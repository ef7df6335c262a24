#!/usr/bin/env bash
# The GPU measurements that issues 5 and 6 wait for, in one script for a session that is lent a GPU
# (the `device` tool; see ../shared/docs/gpu.md). Random weights of the Llama-3.1-8B shape only, so
# nothing has to be carried but the working tree:
#   run: PYTHONPATH=$PWD/src OUT=$OUT bash benchmarks/gpu_session.sh all
# Each part fits one 10-minute call; run them one by one (`... gpu_session.sh bench`) if time is short.
# The tree that travels is capped at 64 MiB and main's tracked tree is ~240 MB (results/, shipped artifacts): run it
# from a throw-away branch without them (results/training/gpu/README.md). Run once, 2026-12-04 (results/gpu/): the
# first bench line in about 85 s with compilation (the call's 175 s less the 90 s kernels ran); `kernels` needed more.
set -euo pipefail
OUT=${OUT:-results/gpu}
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$OUT"
ifprune() { python3 -m ifprune.cli "$@"; }
part=${1:-all}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.csv" || true

if [[ $part == all || $part == bench ]]; then
  # issue 5: the paper's protocol (4096-token prompt, 100 new tokens, 4 samples), width 3584/14336;
  # GRIFFIN selection (a dense prompt pass), then a predictor stand-in reading out after 4 of 32 layers
  ifprune bench --config llama-3.1-8b --device cuda --dtype bfloat16 --out "$OUT" --name llama-3.1-8b-cuda
  ifprune bench --config llama-3.1-8b --device cuda --dtype bfloat16 --selector predictor --backbone-layers 4 \
    --out "$OUT" --name llama-3.1-8b-cuda-predictor4
fi
if [[ $part == all || $part == kernels ]]; then
  # issue 6: dense vs 2:4 semi-structured vs int8 / int4 weight-only, decode and prefill, batch 1 and 16
  ifprune bench-kernels --config llama-3.1-8b --device cuda --dtype bfloat16 --out "$OUT" \
    --name kernels-llama-3.1-8b-cuda-bf16
fi
ls -l "$OUT"
