# Sourced (`. benchmarks/heldout_slices.sh`) by the compare scripts that read both held-out slices of
# results/refresh/: writes them (a: the first 12 examples per family, the 72 every compare reads; b: examples
# 12..23 per family) and defines `slice_file S` (the slice's path) and `slice_tail S` ("" for a, "b" for b).
# require_artifacts HINT DIR...: exit 2 naming the first DIR that holds no trained artifact, and HINT (how to
# make it); call it before sourcing this file, or after: it needs nothing here.
require_artifacts() {
  hint=$1; shift
  for A in "$@"; do
    [ -f "$A/config.json" ] || { echo "no artifact at $A: $hint" >&2; exit 2; }
  done
}
export IFPRUNE_CACHE=${IFPRUNE_CACHE:-$HOME/.cache/ifprune} HF_HUB_OFFLINE=1
.venv/bin/python -m ifprune.training.data_sft --out "$IFPRUNE_CACHE/sft_validation_12.jsonl" --val-per-family 12
.venv/bin/python -m ifprune.training.data_sft --out "$IFPRUNE_CACHE/sft_validation_12to24.jsonl" --val-per-family 24 --first 12
slice_file() { if [ "$1" = b ]; then echo "$IFPRUNE_CACHE/sft_validation_12to24.jsonl"; else echo "$IFPRUNE_CACHE/sft_validation_12.jsonl"; fi; }
slice_tail() { if [ "$1" = b ]; then echo b; fi; }
# nll_slices OUT SELECTOR...: the nll compare of those selectors on each slice of $SLICES (default: a b), into
# OUT (slice a) and OUTb (OUT_SUFFIX, if set, goes after the slice's tail: OUTb_SUFFIX); artifacts run as their
# recipe says; dense and the training-free selectors at keep $KEEPS (default 0.75), compensations $COMPENSATIONS
# (default none); $THREADS threads (default 2). Set these per call: `KEEPS=0.5 nll_slices OUT ...`.
nll_slices() {
  out=$1; shift
  for S in ${SLICES:-a b}; do
    .venv/bin/ifprune eval compare --threads "${THREADS:-2}" --suites nll --data "$(slice_file $S)" --limits nll=72 \
      --no-progress --no-plots --keeps ${KEEPS:-0.75} --compensations ${COMPENSATIONS:-none} --selectors "$@" \
      --out "$out$(slice_tail $S)${OUT_SUFFIX:-}"
  done
}
# summarise_slices OUT SUMMARY TITLE: per slice, the markdown table of what nll_slices wrote to OUT<tail> into
# SUMMARY<tail>.md, titled "TITLE, slice S"
summarise_slices() {
  for S in ${SLICES:-a b}; do
    .venv/bin/python benchmarks/summarise_compare.py "$1$(slice_tail $S)/results.json" "$2$(slice_tail $S).md" "$3, slice $S"
  done
}
# keep_examples OUT: copy each row's per-example results of OUT<tail>/results.json (every slice) from the eval cache
# to OUT<tail>/examples/<label>.jsonl, where benchmarks/paired_nll.py reads them on a clone without the cache
keep_examples() {
  for S in ${SLICES:-a b}; do
    .venv/bin/python - "$1$(slice_tail $S)/results.json" <<'PY'
import json, shutil, sys
from pathlib import Path
sys.path.insert(0, "benchmarks")
from paired_nll import example_copy, example_file
res = Path(sys.argv[1])
for r in json.loads(res.read_text())["results"]:
    src, dst = Path(r["cache_file"]), example_copy(r, res)
    if src.is_file():
        dst.parent.mkdir(exist_ok=True)
        shutil.copyfile(src, dst)
    example_file(r, res)  # fails, naming the row, when neither exists
PY
  done
}
# fidelity_sets: the two fidelity sets, written when missing: the dense model's greedy answers to 120 unread chat
# prompts (general and code; $FID) and to the validation slices' prompts (every family; $VFID, from
# `python -m ifprune.training.teacher --split validation`).
FID="$IFPRUNE_CACHE/fidelity_unread_4000.jsonl"
VFID=runs/fidelity/eval.jsonl
fidelity_sets() {
  [ -f "$VFID" ] || .venv/bin/python -m ifprune.training.teacher --split validation --out runs/fidelity --write-eval "$VFID"
  .venv/bin/python -m ifprune.training.data_sft --out "$IFPRUNE_CACHE/sft_unread_4000.jsonl" --unread-after 4000 \
    --per-family 60 --families general,code
  .venv/bin/python benchmarks/dense_answers.py "$IFPRUNE_CACHE/sft_unread_4000.jsonl" results/quality/loops/dense.jsonl "$FID"
}
