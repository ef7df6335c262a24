#!/bin/sh
# Greedy loop rate (benchmarks/greedy_loops.py) on chat-style prompts no training run read: 60 general
# (Alpaca / self-instruct) and 60 code (Code Alpaca / GPTeacher) training examples from position 4000 of
# each family's fixed order (every run so far read positions < 4000: skip_per_family + max_per_family <=
# 4000), 128 new tokens. Why: at keep 1/2, v11 loops on two of the three README demo prompts where v5 does
# not, while on the 144 held-out validation prompts (64 tokens) it looped less (1 vs 6); this asks which
# holds on more chat prompts. Rows: dense, keep 1/2 v5 and v11, keep 3/4 v5 and v10, each as it ran by
# default then (ROWS="NAME+default ...": as it runs by default now; +every-pruned, +once-dense: its two halves). Two at a time, one thread each; resumable (per-example JSONL).
set -e
export IFPRUNE_CACHE=${IFPRUNE_CACHE:-$HOME/.cache/ifprune} HF_HUB_OFFLINE=1
DATA="$IFPRUNE_CACHE/sft_unread_4000.jsonl"
.venv/bin/python -m ifprune.training.data_sft --out "$DATA" --unread-after 4000 --per-family 60 --families general,code
ART=results/training/artifacts
OUT=results/quality/loops
mkdir -p $OUT
run() {
  # ROW: as the artifact ran by default when the first rows were measured (--no-refresh-every: re-selection once,
  # pruned prefill); ROW+default: as it runs by default since 2026-12-05 (every 32, dense prefill); the two halves
  # of that change apart: ROW+every-pruned, ROW+once-dense
  A=${1%+*}
  case $1 in
    *+default) HOW="" ;;
    *+every-pruned) HOW="--refresh-every --prefill pruned" ;;
    *+once-dense) HOW="--no-refresh-every --prefill dense" ;;
    *+*) echo "unknown row $1" >&2; exit 2 ;;
    *) HOW=--no-refresh-every ;;
  esac
  if [ "$A" = dense ]; then CK=""; else CK="--checkpoint $ART/$A"; fi
  .venv/bin/python benchmarks/greedy_loops.py $CK $HOW --data "$DATA" --out "$OUT/$1" \
    --max-new-tokens 128 --threads 1 \
    2> "$OUT/$1.log"
}
set -- ${ROWS:-smollm2-135m-keep50-v5 smollm2-135m-keep50-v11 smollm2-135m-keep75-v5 smollm2-135m-keep75-v10 dense}
while [ $# -gt 0 ]; do
  run "$1" & P=$!
  if [ $# -gt 1 ]; then run "$2"; fi
  wait $P
  shift; if [ $# -gt 0 ]; then shift; fi
done
