#!/bin/sh
# The demo prompts with and without output compensation (greedy, 48 new tokens); raw JSON lines to demo.jsonl.
set -e
OUT=results/compensation/demo.jsonl
: > "$OUT"
for P in "What is the capital of France? Answer in one sentence." "Give three tips for staying healthy."; do
  for ARGS in "--selector dense" "" "--compensate none" "--selector griffin --keep 0.5" "--selector griffin --keep 0.5 --compensate none"; do
    .venv/bin/ifprune generate "$P" $ARGS --max-new-tokens 48 --threads ${THREADS:-2} --json \
      | python3 -c "import json,sys; d=json.load(sys.stdin); d['args']='$ARGS'; d['prompt']=sys.argv[1]; print(json.dumps(d))" "$P" >> "$OUT"
  done
done
python3 -c "
import json
for l in open('$OUT'):
    d = json.loads(l)
    print(f\"{d['prompt'][:40]!r} [{d['args'] or 'defaults'}] {d['selector']} {d['ffn_width']}/{d['d_ffn']} comp={d['compensation']['mode']}: {d['text']!r}\")"
