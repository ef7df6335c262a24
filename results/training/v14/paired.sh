#!/bin/sh
# v14 (as trained: re-selection after 32 tokens, compensated) against v10 (as shipped) and dense, pooled over
# both held-out slices, paired over the same examples. v10's and dense's rows are those of
# results/training/v10/compare*/ (same slices; per-example caches), v14's those of compare*/ here.
set -e
P=".venv/bin/python benchmarks/paired_nll.py"
V10=results/training/v10
for A in "ifpruning+refresh32[keep75-refresh]:v10" "dense:dense"; do
  $P $V10/compare/results.json "${A%:*}" ifpruning+refresh32 --pool $V10/compareb/results.json \
    --b-from results/training/v14/compare/results.json --b-from results/training/v14/compareb/results.json \
    --out results/training/v14/paired_v14_vs_${A##*:}.json
done
