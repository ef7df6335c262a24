#!/bin/sh
# The demo prompts on the shipped default (no flags) and alongside: the default with compensation,
# GRIFFIN keep 1/2 (with compensation, its default) and the v1 artifact (greedy, 48 new tokens).
# Raw JSON lines to results/training/v2/demo.jsonl. Usage: sh results/training/v2/demo.sh [V1_ARTIFACT]
set -e
OUT=results/training/v2/demo.jsonl
V1=${1:-results/training/artifacts/smollm2-135m-keep50-v1}
: > "$OUT"
for P in "What is the capital of France?" "Give three tips for staying healthy."; do
  for ARGS in "" "--compensate calibration" "--selector griffin --keep 0.5" "--checkpoint $V1"; do
    .venv/bin/ifprune generate "$P" $ARGS --max-new-tokens 48 --threads ${THREADS:-2} --json \
      | python3 -c "import json,sys; d=json.load(sys.stdin); d['args']=sys.argv[2]; d['prompt']=sys.argv[1]; print(json.dumps(d))" "$P" "$ARGS" >> "$OUT"
  done
done
python3 -c "
import json
for l in open('$OUT'):
    d = json.loads(l)
    print(f\"{d['prompt'][:40]!r} [{d['args'] or 'defaults'}] {d['selector']} {d['ffn_width']}/{d['d_ffn']} comp={d['compensation']['mode']}: {d['text']!r}\")"
