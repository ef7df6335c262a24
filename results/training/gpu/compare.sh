#!/bin/sh
# Held-out NLL of the GPU recipe's artifacts (results/training/gpu/run.sh; fetched into runs/gpu/) on both held-out
# slices of results/refresh/ (144 examples): at keep 3/4 and 1/2, IFPruning (as trained, and with re-selection after
# 32 tokens at inference) and learned-static of the same chain, against dense and the shipped defaults (v10, v11);
# at keep 3/4 also the CPU chain's learned-static (runs/static/v5-keep75, if present). Then pooled per-family NLL
# (x dense) per keep. Resumable (per-example caches).
set -e
G=${G:-runs/gpu}
for A in $G/k75-predictor $G/k75-static $G/k50-predictor $G/k50-static; do
  [ -f $A/artifact/config.json ] || { echo "no artifact at $A/artifact: fetch the GPU run's files (results/training/gpu/README.md)"; exit 2; }
done
. benchmarks/heldout_slices.sh
D=results/training/gpu
CPU_STATIC75=runs/static/v5-keep75/artifact
EXTRA75=; [ -f $CPU_STATIC75/config.json ] && EXTRA75="predictor:$CPU_STATIC75"
KEEPS=0.75 nll_slices $D/compare75 dense predictor+refresh-once:src/ifprune/artifacts/smollm2-135m-keep75 "predictor+refresh-once:$G/k75-predictor/artifact" \
  "predictor+refresh32:$G/k75-predictor/artifact" "predictor:$G/k75-static/artifact" $EXTRA75
KEEPS=0.5 nll_slices $D/compare50 dense predictor+refresh-once:src/ifprune/artifacts/smollm2-135m-keep50 "predictor+refresh-once:$G/k50-predictor/artifact" \
  "predictor+refresh32:$G/k50-predictor/artifact" "predictor:$G/k50-static/artifact"
for K in 75 50; do
  .venv/bin/python benchmarks/pooled_nll.py $D/compare$K/results.json $D/compare${K}b/results.json --out $D/pooled$K.json
done
# paired differences over the 144 examples (b - a; negative: b is better)
P=".venv/bin/python benchmarks/paired_nll.py"
$P $D/compare75/results.json "ifpruning+refresh32[smollm2-135m-keep75]" "ifpruning+refresh32[k75-predictor]" \
  --pool $D/compare75b/results.json --out $D/paired75_gpu_vs_v10.json
$P $D/compare75/results.json "learned-static[k75-static]" "ifpruning+refresh32[k75-predictor]" \
  --pool $D/compare75b/results.json --out $D/paired75_gpu_vs_gpu_static.json
if [ -n "$EXTRA75" ]; then
  $P $D/compare75/results.json "learned-static[v5-keep75]" "learned-static[k75-static]" \
    --pool $D/compare75b/results.json --out $D/paired75_gpu_static_vs_cpu_static.json
fi
$P $D/compare50/results.json "ifpruning+refresh32[smollm2-135m-keep50]" "ifpruning+refresh32[k50-predictor]" \
  --pool $D/compare50b/results.json --out $D/paired50_gpu_vs_v11.json
$P $D/compare50/results.json "ifpruning+refresh32[smollm2-135m-keep50]" "ifpruning" \
  --pool $D/compare50b/results.json --out $D/paired50_gpu_plain_vs_v11.json
$P $D/compare50/results.json "learned-static" "ifpruning+refresh32[k50-predictor]" \
  --pool $D/compare50b/results.json --out $D/paired50_gpu_vs_gpu_static.json
