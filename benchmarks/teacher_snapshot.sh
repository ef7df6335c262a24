#!/bin/sh
# A teacher cache from the committed snapshot of the dense model's answers (results/training/teacher/): its header
# and first ROWS answers, written to OUT atomically (a stopped copy never looks finished). Training configs name OUT
# as `data.teacher`; v20 onwards read the first 2,402 rows (1,550 finished answers). From the repository root:
#   sh benchmarks/teacher_snapshot.sh [OUT [ROWS]]     (defaults: runs/teacher_v20 2402)
set -e
OUT=${1:-runs/teacher_v20}
ROWS=${2:-2402}
if [ -f "$OUT/header.json" ]; then
  echo "$OUT exists: left as it is"
  exit 0
fi
rm -rf "$OUT.tmp"
mkdir -p "$OUT.tmp"
cp results/training/teacher/header.json "$OUT.tmp/"
gunzip -c results/training/teacher/answers.jsonl.gz | head -n "$ROWS" > "$OUT.tmp/answers.jsonl"
mv "$OUT.tmp" "$OUT"
echo "wrote $OUT ($ROWS rows)"
