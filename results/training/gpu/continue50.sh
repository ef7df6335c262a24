#!/bin/sh
# Does the GPU chain's keep-1/2 artifact gain from the CPU lineage's many small steps? v11's own recipe (300 steps x 4
# examples, lr 1.5e-4, trained under re-selection after 32 tokens, the same batches v11 read) run from the GPU artifact
# instead of v5: the same change v11 made to v5, on the GPU chain's weights. Then held-out NLL (both slices, 144) beside
# v11 and the GPU artifact (cached rows of compare.sh), pooled, and paired against v11. Resumable (checkpoints, caches).
set -e
G=${G:-runs/gpu}
[ -f $G/k50-predictor/artifact/config.json ] || { echo "no artifact at $G/k50-predictor/artifact (results/training/gpu/README.md)"; exit 2; }
.venv/bin/ifprune train configs/smollm2-keep50-v11-refresh-cpu.yaml --threads ${THREADS:-2} --set init_from=$G/k50-predictor/artifact \
  --set output_dir=runs/gpu-v11/keep50-refresh --set max_minutes=null
cp runs/gpu-v11/keep50-refresh/log.jsonl results/training/gpu/logs/k50-continue-v11-recipe.jsonl
. benchmarks/heldout_slices.sh
D=results/training/gpu
KEEPS=0.5 nll_slices $D/continue50 dense predictor+refresh-once:src/ifprune/artifacts/smollm2-135m-keep50 "predictor+refresh-once:$G/k50-predictor/artifact" \
  "predictor+refresh32:$G/k50-predictor/artifact" predictor+refresh-once:runs/gpu-v11/keep50-refresh/artifact
.venv/bin/python benchmarks/pooled_nll.py $D/continue50/results.json $D/continue50b/results.json --out $D/pooled_continue50.json
.venv/bin/python benchmarks/paired_nll.py $D/continue50/results.json "ifpruning+refresh32[smollm2-135m-keep50]" \
  "ifpruning+refresh32[keep50-refresh]" --pool $D/continue50b/results.json --out $D/paired50_continue_vs_v11.json
