#!/bin/sh
# IFEval (item 6 of issue 14): the first $N prompts (default 200) of google-research's IFEval, greedy,
# at most $TOKENS new tokens (default 256, the suite's default; lm-eval allows 1280), strict and loose
# prompt/instruction accuracy with lm-eval's checkers, 95% bootstrap intervals. Rows (ROWS, any of):
# dense; v10, the shipped keep-3/4 default (as it runs by default: re-selection after 32 tokens);
# v11, the shipped keep-1/2 artifact (`--keep 0.5`); GRIFFIN with calibration compensation at 3/4 and
# 1/2; v10-dense (v10's weights, every channel); v10-task and v11-task (IFPruning per task: one plan from
# the suite's task description, re-selection off, as an exported per-task model runs); v10-refresh0 and
# v11-refresh0 (per input with re-selection off, the per-task rows' like-for-like); art (ART=DIR [NAME=...]). Per-example caches: a run that is stopped resumes where it was (run it again). One thread each
# unless THREADS. IFEval is a test set: reported, never tuned on.
set -e
export IFPRUNE_CACHE=${IFPRUNE_CACHE:-$HOME/.cache/ifprune} HF_HUB_OFFLINE=1
N=${N:-200}
TOKENS=${TOKENS:-256}
OUT=${OUT:-results/quality/ifeval}
IFP=".venv/bin/ifprune eval compare --threads ${THREADS:-1} --suites ifeval --limits ifeval=$N --max-new-tokens $TOKENS --no-plots"
for ROW in ${ROWS:-dense v10 v11 griffin75 griffin50}; do
  case $ROW in
    dense) $IFP --keeps 0.75 --compensations none --selectors dense --out $OUT/dense ;;
    v10) $IFP --keeps 0.75 --compensations none --selectors predictor+refresh-once:src/ifprune/artifacts/smollm2-135m-keep75 --out $OUT/v10 ;;
    v11) $IFP --keeps 0.5 --compensations none --selectors predictor+refresh-once:src/ifprune/artifacts/smollm2-135m-keep50 --out $OUT/v11 ;;
    # v10 and v11 as they run by default since 2026-12-05 (re-selection every 32 tokens, dense prefill); v10/v11 above: as
    # they ran by default when measured (once after 32, pruned prefill)
    v10-default) $IFP --keeps 0.75 --compensations none --selectors predictor:src/ifprune/artifacts/smollm2-135m-keep75 --out $OUT/v10_default ;;
    v11-default) $IFP --keeps 0.5 --compensations none --selectors predictor:src/ifprune/artifacts/smollm2-135m-keep50 --out $OUT/v11_default ;;
    # per task: one plan from IFEval's task description (eval/ifeval.py), no re-selection: what an export runs
    v10-task) $IFP --keeps 0.75 --compensations none --selectors predictor-task+refresh0:src/ifprune/artifacts/smollm2-135m-keep75 --out $OUT/v10_task ;;
    v11-task) $IFP --keeps 0.5 --compensations none --selectors predictor-task+refresh0:src/ifprune/artifacts/smollm2-135m-keep50 --out $OUT/v11_task ;;
    v10-refresh0) $IFP --keeps 0.75 --compensations none --selectors predictor+refresh0:src/ifprune/artifacts/smollm2-135m-keep75 --out $OUT/v10_refresh0 ;;
    v11-refresh0) $IFP --keeps 0.5 --compensations none --selectors predictor+refresh0:src/ifprune/artifacts/smollm2-135m-keep50 --out $OUT/v11_refresh0 ;;
    # v10's tuned weights with every channel kept: how much of a gap is the fine-tuning, not the pruning
    v10-dense) mkdir -p $OUT/v10_dense
               .venv/bin/ifprune eval ifeval --checkpoint src/ifprune/artifacts/smollm2-135m-keep75 --keep 1.0 --limit $N \
                 --max-new-tokens $TOKENS --threads ${THREADS:-1} --no-progress --json > $OUT/v10_dense/results.json ;;
    # any other artifact directory given as ART (its default re-selection and compensation), output under $OUT/NAME
    art) $IFP --keeps $(.venv/bin/python -c "import json,sys; print(json.load(open(sys.argv[1]+'/config.json'))['keep'])" $ART) \
           --compensations $(.venv/bin/python -c "from ifprune.selection.artifact import load_artifact, recipe_compensate as r; import sys; print(r(load_artifact(sys.argv[1]).config))" $ART) \
           --selectors predictor:$ART --out $OUT/${NAME:-$(basename $ART)} ;;
    griffin75) $IFP --keeps 0.75 --compensations calibration --selectors griffin --out $OUT/griffin75_calibration ;;
    griffin50) $IFP --keeps 0.5 --compensations calibration --selectors griffin --out $OUT/griffin50_calibration ;;
  esac
done
