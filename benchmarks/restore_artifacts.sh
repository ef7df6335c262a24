#!/bin/sh
# Write superseded trained artifacts back into results/training/artifacts/ from the repository's history
# (results/training/artifacts/README.md lists them with their sha256), untracked; checks every file.
#   sh benchmarks/restore_artifacts.sh                        # all of them
#   sh benchmarks/restore_artifacts.sh smollm2-135m-keep75-v5  # one
set -e
COMMIT=f1d2c13165dd2882aec222c5d62f8b56f38703d5
ALL="smollm2-135m-keep50-static smollm2-135m-keep50-v1 smollm2-135m-keep50-v2 smollm2-135m-keep50-v5 smollm2-135m-keep50-v13 smollm2-135m-keep50-v11 smollm2-135m-keep75-v4 smollm2-135m-keep75-v5 smollm2-135m-keep75-v10"
MANIFEST=results/training/artifacts/README.md
cd "$(dirname "$0")/.."
git cat-file -e "$COMMIT^{commit}" 2>/dev/null || {
  echo "this checkout lacks commit $COMMIT (a shallow clone?): git fetch --unshallow, then run again" >&2; exit 2; }
[ $# -gt 0 ] || set -- $ALL
for N in "$@"; do
  case " $ALL " in *" $N "*) ;; *) echo "unknown artifact $N; one of: $ALL" >&2; exit 2 ;; esac
  git archive "$COMMIT" "results/training/artifacts/$N" | tar -x
  grep "^| $N |" "$MANIFEST" | while IFS='|' read -r _ name file bytes sum _; do
    f="results/training/artifacts/$(echo $name)/$(echo $file)"
    s=$(echo $sum | tr -d '`')
    echo "$s  $f" | sha256sum -c --quiet - || { echo "$f does not match its sha256" >&2; exit 1; }
  done
  echo "restored results/training/artifacts/$N"
done
