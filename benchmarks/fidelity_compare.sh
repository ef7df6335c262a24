#!/bin/sh
# Fidelity of a trained artifact against earlier ones and the dense model, each as it runs by default (re-selection
# every 32, dense-answer prefill), on the dense model's answers to 120 unread chat prompts and to the 139 validation
# prompts (benchmarks/heldout_slices.sh: fidelity_sets), paired new - each earlier one (benchmarks/paired_nll.py),
# then the loops of 128 greedy tokens on the 120 unread prompts. At KEEP (default 0.75: the artifacts' own keep).
# One thread unless THREADS; resumable (per-example cache). From the repository root:
#   sh benchmarks/fidelity_compare.sh OUT NEW=DIR OLD=DIR [OLD=DIR ...]
# writes OUT/fidelity, OUT/vfidelity, OUT/paired_{fidelity,vfidelity}_OLD.json and OUT/loops/NEW.json.
set -e
[ $# -ge 3 ] || { echo "usage: sh benchmarks/fidelity_compare.sh OUT NEW=DIR OLD=DIR [OLD=DIR ...]" >&2; exit 2; }
D=$1; NEW=$2; shift 2
. benchmarks/heldout_slices.sh
ROWS="dense"
for P in "$@" "$NEW"; do
  require_artifacts "train or restore it first" "${P#*=}"
  ROWS="$ROWS predictor:${P#*=}"
done
label() {  # the row label eval compare gives an artifact directory (its parent's name when it is ".../artifact")
  b=$(basename "$1"); [ "$b" = artifact ] && b=$(basename "$(dirname "$1")")
  echo "ifpruning+reselect-every32+dense-answer-prefill[$b]"
}
fidelity_sets
for SET in fidelity vfidelity; do
  DATA=$FID; N=120; [ $SET = vfidelity ] && DATA=$VFID && N=200
  .venv/bin/ifprune eval compare --threads ${THREADS:-1} --suites nll --data "$DATA" --limits nll=$N --no-progress \
    --no-plots --keeps ${KEEP:-0.75} --compensations none --selectors $ROWS --out $D/$SET
  for P in "$@"; do
    .venv/bin/python benchmarks/paired_nll.py $D/$SET/results.json "$(label "${P#*=}")" "$(label "${NEW#*=}")" \
      --out $D/paired_${SET}_${P%%=*}.json
  done
done
mkdir -p $D/loops
[ -s $D/loops/${NEW%%=*}.json ] || .venv/bin/python benchmarks/greedy_loops.py --checkpoint "${NEW#*=}" \
  --data "$IFPRUNE_CACHE/sft_unread_4000.jsonl" --out $D/loops/${NEW%%=*} --max-new-tokens 128 --threads ${THREADS:-1}
