#!/usr/bin/env bash
# The GPU recipe (configs/smollm2-gpu-{pretrain,sft}.yaml): stage 1 then stage 2 for IFPruning and
# learned-static at keep 1/2 and keep 3/4, four chains side by side on one GPU, inside one device call.
# Each IFPruning stage runs a probe of 20 steps (the warm-up, whose learning rates do not depend on the
# total), reads its step time from the log, and resumes to the steps that fit the stage's time budget
# (S1, S2 seconds; the restart's start-up, at most 30 s, counted); its learned-static twin trains the same number of steps, so both read the same batches.
# Artifacts and logs go to $OUT as they finish (each stage-2 artifact split into <16 MB pieces).
#   on the device, after the model and data are in place (docs/training.md, "GPU recipe"):
#   OUT=$OUT IFPRUNE_DATA=/tmp/data bash benchmarks/gpu_training.sh
# SMOKE=1 runs the same chain on this CPU with a tiny budget and batch (a check of the script, not a run).
set -u
OUT=${OUT:-runs/gpu/out}
ROOT=${ROOT:-runs/gpu}
S1=${S1:-130}
S2=${S2:-320}
THREADS=${THREADS:-4}
PROBE=20
WS=800  # prompts of the predictor's warm start; learned-static starts from the mean of the same scores
EXTRA=()
if [[ ${SMOKE:-0} == 1 ]]; then
  PROBE=2 S1=${S1_SMOKE:-60} S2=${S2_SMOKE:-60} THREADS=1 WS=16
  EXTRA=(--set warmup_steps=2 --set batch_size=2 --set checkpoint_every=5 --set eval_every=5 --set data.eval_per_family=1 --set data.chunk_tokens=32
         --set data.max_seq_len=64 --set data.max_prompt_tokens=32)
fi
mkdir -p "$OUT" "$ROOT"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
ifp() { python3 -m ifprune.cli "$@"; }

# steps that fit: LOG BUDGET_S PROBE_WALL_S -> PROBE + 0.9 * (budget - probe wall - one more start-up, at most 30 s)
# / (seconds per step after the first few); the start-up is the probe's wall less its logged training time
fit_steps() {
  python3 - "$1" "$2" "$3" "$PROBE" <<'PY'
import json, sys
rows = [json.loads(x) for x in open(sys.argv[1]) if x.strip()]
rows = [r for r in rows if "step" in r and "elapsed_s" in r and "event" not in r]
budget, wall, probe = float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
left = budget - wall - min(max(wall - rows[-1]["elapsed_s"], 0), 30)
a, b = rows[min(3, len(rows) - 2)], rows[-1]
rate = (b["elapsed_s"] - a["elapsed_s"]) / max(b["step"] - a["step"], 1)
print(max(probe, probe + int(0.9 * left / max(rate, 1e-3))))
PY
}

# stage KEY METHOD CONFIG BUDGET_S INIT [--set ...]: probe, then resume to the fitted (or the twin's) steps
stage() {
  local key=$1 method=$2 cfg=configs/smollm2-gpu-$3.yaml budget=$4 init=$5
  shift 5
  local dir=$ROOT/$key-$method log=$ROOT/$key-$method.out t0 t1 steps
  local sets=(--threads "$THREADS" --set method="$method" --set output_dir="$dir" --set init_from="$init" "$@" "${EXTRA[@]}")
  t0=$(date +%s)
  ifp train "$cfg" "${sets[@]}" --set steps=$PROBE --set eval_every=0 >> "$log" 2>&1 || { echo "$key-$method probe failed"; return 1; }
  t1=$(date +%s)
  if [[ $method == predictor ]]; then
    steps=$(fit_steps "$dir/log.jsonl" "$budget" "$((t1 - t0))")
    echo "$steps" > "$ROOT/$key.steps"
  else
    while [[ ! -s $ROOT/$key.steps ]]; do sleep 2; [[ -e $ROOT/$key.failed ]] && return 1; done
    steps=$(cat "$ROOT/$key.steps")
  fi
  echo "$key-$method: probe $((t1 - t0)) s, $steps steps"
  ifp train "$cfg" "${sets[@]}" --set steps="$steps" --set max_minutes="$(python3 -c "print(round($budget * 1.15 / 60, 2))")" \
    >> "$log" 2>&1 || { echo "$key-$method failed"; return 1; }
  echo "$key-$method done at $(( $(date +%s) - START )) s"
}

chain() {  # KEEP_NAME KEEP METHOD [--set ...]
  local k=$1 keep=$2 m=$3
  shift 3
  stage "$k-pretrain" "$m" pretrain "$S1" null --set keep="$keep" "$@" || { touch "$ROOT/$k-pretrain.failed"; return 1; }
  stage "$k-sft" "$m" sft "$S2" "$ROOT/$k-pretrain-$m/artifact" --set keep="$keep" \
    || { touch "$ROOT/$k-sft.failed"; return 1; }
  tar -cf - -C "$ROOT/$k-sft-$m" artifact | split -b 15000000 - "$OUT/$k-$m.tar."
}

START=$(date +%s)
chain k50 0.5 predictor --set warmstart_prompts=$WS &
chain k75 0.75 predictor --set warmstart_prompts=$WS &
chain k50 0.5 static --set warmstart_prompts=0 --set prior_prompts=$WS &
chain k75 0.75 static --set warmstart_prompts=0 --set prior_prompts=$WS &
wait
for d in "$ROOT"/*/; do [[ -f $d/log.jsonl ]] && cp "$d/log.jsonl" "$ROOT/$(basename "$d").jsonl"; done
tar -cJf "$OUT/logs.tar.xz" -C "$ROOT" $(cd "$ROOT" && ls *.jsonl *.json *.log *.out *.steps 2>/dev/null) \
  $(cd "$ROOT" && ls -d */warmstart.json 2>/dev/null)
echo "all done at $(( $(date +%s) - START )) s"
ls -l "$OUT"
