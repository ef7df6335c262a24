#!/bin/sh
# Greedy loop rate (benchmarks/greedy_loops.py) on both held-out slices, 64 new tokens, each artifact as it
# runs by default then (--no-refresh-every: re-selection once, pruned prefill): keep 1/2 v5 (shipped) and v11; keep 3/4 v5 (shipped before v10) and v10 (shipped).
# Two at a time, one thread each. Resumable (per-example JSONL).
set -e
export IFPRUNE_CACHE=${IFPRUNE_CACHE:-$HOME/.cache/ifprune} HF_HUB_OFFLINE=1
A="$IFPRUNE_CACHE/sft_validation_12.jsonl"; B="$IFPRUNE_CACHE/sft_validation_12to24.jsonl"
ART=results/training/artifacts
OUT=results/training/v11/loops
mkdir -p $OUT
run() { .venv/bin/python benchmarks/greedy_loops.py --checkpoint "$ART/$1" --no-refresh-every --data "$2" --out "$OUT/$1-$3" --threads 1 2>/dev/null; }
for K in ${KEEPS:-keep50 keep75}; do
  NEW=smollm2-135m-keep50-v11; [ $K = keep75 ] && NEW=smollm2-135m-keep75-v10
  run smollm2-135m-$K-v5 $A a & run $NEW $A a & wait
  run smollm2-135m-$K-v5 $B b & run $NEW $B b & wait
done
