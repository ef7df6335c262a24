#!/bin/sh
# In-loop validation NLL against training tokens for the GPU run's four chains (stage 1 then stage 2; first 8
# held-out examples per family, hard masks, answers up to 512 tokens as the GPU recipe trains, so not the same
# numbers as the CPU curves, which cut at 160) -> curves{75,50}.{json,md,png}.
set -e
L=results/training/gpu/logs
P=".venv/bin/python benchmarks/training_curves.py"
for K in 75 50; do
  $P --run "IFPruning=$L/k$K-pretrain-predictor.jsonl,$L/k$K-sft-predictor.jsonl" \
    --run "learned-static=$L/k$K-pretrain-static.jsonl,$L/k$K-sft-static.jsonl" --out results/training/gpu/curves$K
done
