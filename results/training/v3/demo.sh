#!/bin/sh
# The demo prompts on the shipped default (no flags) and alongside: dense, each shipped artifact by
# --keep, the v2 artifact, GRIFFIN keep 1/2 (with compensation, its default); greedy, 48 new tokens.
# Raw JSON lines to results/training/v3/demo.jsonl. Usage: sh results/training/v3/demo.sh [V2_ARTIFACT]
set -e
OUT=results/training/v3/demo.jsonl
V2=${1:-results/training/artifacts/smollm2-135m-keep50-v2}
: > "$OUT"
for P in "What is the capital of France?" "Give three tips for staying healthy." \
         "Write a Python function that returns the factorial of n."; do
  for ARGS in "" "--selector dense" "--keep 0.75" "--keep 0.5" "--checkpoint $V2" "--selector griffin --keep 0.5"; do
    .venv/bin/ifprune generate "$P" $ARGS --max-new-tokens 48 --threads ${THREADS:-2} --json \
      | python3 -c "import json,sys; d=json.load(sys.stdin); d['args']=sys.argv[2]; d['prompt']=sys.argv[1]; print(json.dumps(d))" "$P" "$ARGS" >> "$OUT"
  done
done
python3 -c "
import json
for l in open('$OUT'):
    d = json.loads(l)
    w = d['weights']['tuned_by'] or 'base'
    print(f\"{d['prompt'][:40]!r} [{d['args'] or 'defaults'}] {d['selector']} {d['ffn_width']}/{d['d_ffn']} weights={w.split('/')[-1]} comp={d['compensation']['mode']}: {d['text']!r}\")"
