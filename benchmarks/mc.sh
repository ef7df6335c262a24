#!/bin/sh
# Multiple choice (item 6 of issue 14) at keep $KEEP (default 3/4): MMLU 5-shot, ARC easy/challenge, PIQA,
# Winogrande, BoolQ, OpenBookQA, the first $N of each (default 200: what this session's CPU allowed; the
# issue asks for 500), 95% bootstrap intervals; dense, GRIFFIN with calibration compensation, and
# IFPruning per input (the artifact given as $ART, default: the shipped keep-3/4 one), and that
# artifact's tuned weights with every channel kept (ROWS=tuned-dense), IFPruning per task (ROWS=task: one
# plan per sub-task from its description, eval/mc.py MC_TASKS), a learned-static artifact (ROWS=static,
# $STATIC) and the dense model fine-tuned on the same data and budget (ROWS=dense-sft, $DENSE_SFT). Per-example caches: a run that is stopped resumes where it was (run it again). One thread each
# unless THREADS.
set -e
export IFPRUNE_CACHE=${IFPRUNE_CACHE:-$HOME/.cache/ifprune} HF_HUB_OFFLINE=1
ART=${ART:-results/training/artifacts/smollm2-135m-keep75-v5}  # v5: shipped when mc-keep75/ was measured
N=${N:-200}
KEEP=${KEEP:-0.75}
OUT=${OUT:-results/quality/mc-keep75}
IFP=".venv/bin/ifprune eval compare --threads ${THREADS:-1} --suites mc --keeps $KEEP --limits mc=$N --no-plots"
for ROW in ${ROWS:-dense griffin predictor}; do
  case $ROW in
    dense) $IFP --compensations none --selectors dense --out $OUT/dense ;;
    griffin) $IFP --compensations calibration --selectors griffin --out $OUT/griffin_calibration ;;
    # predictor, task: as the artifact ran by default until 2026-12-05 (re-selection once after its own R, if it
    # has one; pruned prefill), the rows measured then; default: as it runs by default now (every R, dense prefill)
    predictor) $IFP --compensations none --selectors predictor+refresh-once:$ART --out $OUT/predictor ;;
    task) $IFP --compensations none --selectors predictor-task+refresh-once:$ART --out $OUT/predictor_task ;;
    default) $IFP --compensations none --selectors predictor:$ART --out $OUT/predictor_every_dense ;;
    static) $IFP --compensations none --selectors predictor:${STATIC:?set STATIC to a learned-static artifact} \
              --out $OUT/static ;;
    # the dense model fine-tuned on IFPruning's data and budget (the run.sh block of results/training/dense/README.md): the fair dense
    # reference; it runs at full width whatever KEEP is
    dense-sft) $IFP --compensations none --selectors predictor:${DENSE_SFT:-runs/dense/v5-sft/artifact} \
                 --out $OUT/dense_sft ;;
    # the artifact's tuned weights with every channel kept: how much of a gap is SFT, not pruning (compare runs
    # an artifact at its own width, so this row is one `eval mc`)
    tuned-dense) mkdir -p $OUT/tuned_dense
                 .venv/bin/ifprune eval mc --checkpoint $ART --keep 1.0 --limit $N --threads ${THREADS:-1} --json \
                   > $OUT/tuned_dense/result.json ;;
  esac
done
