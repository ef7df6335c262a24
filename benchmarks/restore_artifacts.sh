#!/bin/sh
# Write superseded trained artifacts back into results/training/artifacts/ from the repository's history
# (results/training/artifacts/README.md lists them with their sha256), untracked; checks every file.
#   sh benchmarks/restore_artifacts.sh                        # all of them
#   sh benchmarks/restore_artifacts.sh smollm2-135m-keep75-v5  # one
set -e
COMMIT=f1d2c13165dd2882aec222c5d62f8b56f38703d5  # every artifact but v17's
COMMIT_V17=3664025d581ab5fcd2063c794c9578ee6f9affb8
ALL="smollm2-135m-keep50-static smollm2-135m-keep50-v1 smollm2-135m-keep50-v2 smollm2-135m-keep50-v5 smollm2-135m-keep50-v13 smollm2-135m-keep50-v11 smollm2-135m-keep75-v4 smollm2-135m-keep75-v5 smollm2-135m-keep75-v10 smollm2-135m-keep75-v17"
MANIFEST=results/training/artifacts/README.md
cd "$(dirname "$0")/.."
for C in $COMMIT $COMMIT_V17; do
  git cat-file -e "$C^{commit}" 2>/dev/null || {
    echo "this checkout lacks commit $C (a shallow clone?): git fetch --unshallow, then run again" >&2; exit 2; }
done
[ $# -gt 0 ] || set -- $ALL
for N in "$@"; do
  case " $ALL " in *" $N "*) ;; *) echo "unknown artifact $N; one of: $ALL" >&2; exit 2 ;; esac
  C=$COMMIT; [ "$N" = smollm2-135m-keep75-v17 ] && C=$COMMIT_V17
  git archive "$C" "results/training/artifacts/$N" | tar -x
  grep "^| $N |" "$MANIFEST" | while IFS='|' read -r _ name file bytes sum _; do
    f="results/training/artifacts/$(echo $name)/$(echo $file)"
    s=$(echo $sum | tr -d '`')
    echo "$s  $f" | sha256sum -c --quiet - || { echo "$f does not match its sha256" >&2; exit 1; }
  done
  echo "restored results/training/artifacts/$N"
done
