#!/bin/sh
# Paired NLL differences over both held-out slices (144 examples), IFPruning minus the reference (negative:
# IFPruning better): v5 (IFPruning at the same 1.57M-token budget, one plan per answer) and v11 (shipped, v5
# + 157k tokens under re-selection) against learned-static at the budget, and learned-static against GRIFFIN
# with compensation (keep 1/2). Rows from compare*/ here and results/training/v11/compare*/.
set -e
P=".venv/bin/python benchmarks/paired_nll.py"
D=results/training/static V11=results/training/v11
for B in "ifpruning[smollm2-135m-keep50-v5]:v5" "ifpruning+refresh32[keep50-refresh]:v11"; do
  $P $D/compare/results.json "learned-static[v5-sft]" "${B%:*}" --pool $D/compareb/results.json \
    --b-from $V11/compare/results.json --b-from $V11/compareb/results.json --out $D/paired_${B##*:}_vs_static.json
done
$P $D/compare_griffin_compensated/results.json griffin "learned-static[v5-sft]" \
  --pool $D/compareb_griffin_compensated/results.json \
  --b-from $D/compare/results.json --b-from $D/compareb/results.json --out $D/paired_static_vs_griffin_compensated.json
$P $D/compare/results.json "learned-static[smollm2-135m-keep50-static]" "learned-static[v5-sft]" \
  --pool $D/compareb/results.json --out $D/paired_static_budget_vs_157k.json
# keep 3/4 (compare75*/, every row there): IFPruning v5 at 3/4 (the same budget, one plan per answer) and v10
# (shipped) against learned-static at 3/4; learned-static and v10 against GRIFFIN with compensation.
for B in ifpruning:v5 ifpruning+refresh32:v10; do
  $P $D/compare75/results.json learned-static "${B%:*}" --pool $D/compare75b/results.json \
    --out $D/paired75_${B##*:}_vs_static.json
done
for B in learned-static:static ifpruning+refresh32:v10; do
  $P $D/compare75_griffin_compensated/results.json griffin "${B%:*}" --pool $D/compare75b_griffin_compensated/results.json \
    --b-from $D/compare75/results.json --b-from $D/compare75b/results.json \
    --out $D/paired75_${B##*:}_vs_griffin_compensated.json
done
.venv/bin/python benchmarks/pooled_nll.py $D/compare75/results.json $D/compare75b/results.json --out $D/pooled75.json
