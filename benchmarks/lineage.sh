# Sourced by the run.sh blocks of results/training/static/README.md and results/training/dense/README.md, which re-run the IFPruning lineage's own configs
# with other methods. Defines `stage NAME CONFIG INIT_FROM [--set KEY=VALUE ...]`: one stage of
# configs/smollm2-CONFIG-cpu.yaml with `method: static`, no max_minutes, output in $ROOT/NAME, continuing
# INIT_FROM, $THREADS threads, plus the caller's $OVERRIDES; log appended to $ROOT/train.out and the per-step
# records copied to $LOGS/NAME.jsonl when it ends. STAGES="a b c", when set, runs only the stages named (a chain's
# earlier stages must be among them or already trained, since each continues its INIT_FROM).
THREADS=${THREADS:-2}
mkdir -p "$ROOT" "$LOGS"
stage() {
  name=$1 config=configs/smollm2-$2-cpu.yaml init=$3
  shift 3
  case " ${STAGES:-$name} " in *" $name "*) ;; *) echo "skipping $name (not in STAGES)"; return 0 ;; esac
  # shellcheck disable=SC2086  # OVERRIDES is a list of --set words
  .venv/bin/ifprune train "$config" --threads "$THREADS" --set method=static --set max_minutes=null $OVERRIDES \
    --set output_dir="$ROOT/$name" --set init_from="$init" "$@" >> "$ROOT/train.out" 2>&1
  cp "$ROOT/$name/log.jsonl" "$LOGS/$name.jsonl"
}
