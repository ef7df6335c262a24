#!/bin/sh
# Fidelity to the dense model, a validation check (no test data): the 120 chat prompts of loops.sh (general
# and code training examples no run read) with the dense model's own greedy answers (loops/dense.jsonl, 128
# tokens) as responses; each row's NLL of those answers (`eval compare --suites nll --data`). Lower: closer
# to what the dense model says. The SFT validation NLL rewards learning the data's reference answers; this
# rewards keeping the dense model's behaviour. Rows: each artifact as it ran by default when measured, GRIFFIN with
# compensation; ROWS75 / ROWS50 extend them. Those rows ran the artifacts as they ran by default then (one
# re-selection, pruned prefill); the *_default folders: as they run by default since 2026-12-05 (every 32, dense
# prefill), and v11 re-selecting every 32 with a pruned prefill. Resumable (per-example cache).
set -e
export IFPRUNE_CACHE=${IFPRUNE_CACHE:-$HOME/.cache/ifprune} HF_HUB_OFFLINE=1
DATA="$IFPRUNE_CACHE/fidelity_unread_4000.jsonl"
.venv/bin/python benchmarks/dense_answers.py "$IFPRUNE_CACHE/sft_unread_4000.jsonl" results/quality/loops/dense.jsonl "$DATA"
ART=results/training/artifacts
NLL=".venv/bin/ifprune eval compare --threads ${THREADS:-1} --suites nll --data $DATA --limits nll=120 --no-progress --no-plots"
$NLL --keeps 0.75 --compensations none --selectors dense "predictor:$ART/smollm2-135m-keep75-v5" \
  "predictor+refresh-once:$ART/smollm2-135m-keep75-v10" ${ROWS75} --out results/quality/fidelity/keep75
$NLL --keeps 0.75 --compensations calibration --selectors griffin --out results/quality/fidelity/keep75_griffin
$NLL --keeps 0.5 --compensations none --selectors "predictor:$ART/smollm2-135m-keep50-v5" \
  "predictor+refresh-once:$ART/smollm2-135m-keep50-v11" ${ROWS50} --out results/quality/fidelity/keep50
$NLL --keeps 0.5 --compensations calibration --selectors griffin --out results/quality/fidelity/keep50_griffin
$NLL --keeps 0.75 --compensations none --selectors dense "predictor:$ART/smollm2-135m-keep75-v10" \
  --out results/quality/fidelity/keep75_default
$NLL --keeps 0.5 --compensations none --selectors dense "predictor:$ART/smollm2-135m-keep50-v11" \
  "predictor+refresh-every32+pruned-prefill:$ART/smollm2-135m-keep50-v11" --out results/quality/fidelity/keep50_default
