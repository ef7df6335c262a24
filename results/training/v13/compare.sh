#!/bin/sh
# Validation NLL per family, keep 1/2, both orders of compensation-aware training: v11 (trained under plain
# masks) with and without the refit at inference, and v13 (the same run trained under compensated plans)
# with and without it; dense for reference. Both held-out slices of results/refresh/ (a: the 72 every
# compare reads; b: examples 12..23 per family). Both artifacts re-select after 32 tokens (their recipes);
# the +refresh0 rows run one plan per answer, as an export does.
# Resumable (per-example cache). SELECTORS overrides the rows (e.g. to measure v11 while v13 trains).
set -e
export IFPRUNE_CACHE=${IFPRUNE_CACHE:-$HOME/.cache/ifprune} HF_HUB_OFFLINE=1
V13=${1:-runs/v13/keep50-compensated/artifact}
V11=${V11:-results/training/artifacts/smollm2-135m-keep50-v11}
OUTDIR=${OUTDIR:-results/training/v13}
.venv/bin/python -m ifprune.training.data_sft --out "$IFPRUNE_CACHE/sft_validation_12.jsonl" --val-per-family 12
.venv/bin/python -m ifprune.training.data_sft --out "$IFPRUNE_CACHE/sft_validation_12to24.jsonl" --val-per-family 24 --first 12
for S in ${SLICES:-a b}; do
  VAL="$IFPRUNE_CACHE/sft_validation_12.jsonl"; TAIL=""
  [ "$S" = b ] && VAL="$IFPRUNE_CACHE/sft_validation_12to24.jsonl" && TAIL=b
  OUT=$OUTDIR/compare$TAIL
  .venv/bin/ifprune eval compare --threads "${THREADS:-2}" --suites nll --keeps 0.5 --data "$VAL" --limits nll=72 \
    --no-progress --no-plots --compensations none calibration \
    --selectors ${SELECTORS:-dense "predictor:$V11" "predictor+refresh0:$V11" "predictor:$V13" "predictor+refresh0:$V13"} --out $OUT
  .venv/bin/python benchmarks/summarise_compare.py $OUT/results.json $OUTDIR/summary$TAIL.md \
    "v13 (keep 1/2, trained under compensated plans) vs v11, slice $S"
done
.venv/bin/python benchmarks/pooled_nll.py $OUTDIR/compare/results.json $OUTDIR/compareb/results.json \
  --out $OUTDIR/pooled.json
