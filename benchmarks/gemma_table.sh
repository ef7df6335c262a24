#!/bin/sh
# Gemma 3 270M (`--model gemma3-270m`, pip install 'ifprune[gemma]') through every command: generate, eval nll
# and mc against dense, GRIFFIN + compensation at keep 3/4 and 1/2, a per-task GGUF export read back by
# llama.cpp (decode speed against the packaged Q4_K_M file), and serve with a real client. Each step writes its
# own file under OUT and is skipped when that file exists (run again to resume). THREADS (default 1).
set -e
OUT=${1:-results/gemma}
T=${THREADS:-1}
M=gemma3-270m
IF=.venv/bin/ifprune
export IFPRUNE_CACHE=${IFPRUNE_CACHE:-$HOME/.cache/ifprune} HF_HUB_OFFLINE=1
mkdir -p "$OUT"
. benchmarks/heldout_slices.sh
lscpu | grep -E "Model name|Flags" | sed 's/Flags:.*\(avx512_bf16\).*/AVX-512 BF16: yes/' > "$OUT/machine.txt"
Q="What is the capital of France?"
P="Write a Python function that returns the factorial of n."
# 1. generate: dense and GRIFFIN + calibration refit at keep 3/4 and 1/2, JSON each (answers and timings)
for ROW in "dense::" "griffin:0.75:calibration" "griffin:0.5:calibration"; do
  S=${ROW%%:*}; R=${ROW#*:}; K=${R%%:*}; C=${R#*:}
  F="$OUT/generate_${S}${K:+_$K}.jsonl"
  [ -s "$F" ] && continue
  for PR in "$Q" "$P"; do
    $IF generate "$PR" --model $M --selector $S ${K:+--keep $K} ${C:+--compensate $C} --max-new-tokens 64 \
      --threads $T --json --no-stream
  done > "$F.tmp" && mv "$F.tmp" "$F"
done
# 2. eval: held-out NLL (validation slice a, 72 examples) and multiple choice (ARC-easy, PIQA, first 100 each)
[ -s "$OUT/nll/results.json" ] || $IF eval compare --model $M --threads $T --suites nll --data "$(slice_file a)" \
  --limits nll=72 --no-progress --no-plots --keeps 0.75 0.5 --compensations calibration --selectors dense griffin \
  --out "$OUT/nll"
[ -s "$OUT/mc/results.json" ] || $IF eval compare --model $M --threads $T --suites mc --mc-tasks arc_easy piqa \
  --limits mc=100 --no-progress --no-plots --keeps 0.75 0.5 --compensations calibration --selectors dense griffin \
  --out "$OUT/mc"
# 3. a per-task GGUF export at keep 1/2 (Q8_0 and Q4_K_M), read back by llama.cpp: decode speed and an answer
for TY in q8_0 q4_k_m; do
  [ -s "$OUT/export_$TY.json" ] || $IF export --model $M --task "Answer Python coding questions." --keep 0.5 \
    --compensate calibration --format gguf --gguf-type $TY --out "/tmp/gemma-py-$TY.gguf" --overwrite --threads $T \
    > "$OUT/export_$TY.json" 2> "$OUT/export_$TY.log"
done
# (raw completion: Gemma 3 270M is a base model; its GGUF has no chat template llama.cpp applies)
[ -s "$OUT/llamacpp.json" ] || .venv/bin/python benchmarks/gguf_decode.py --threads $T --raw --prompt "$P" \
  --gguf "packaged Q4_K_M=$IFPRUNE_CACHE/packaged/gemma-3-270m-q4_k_m.gguf" \
  --gguf "keep 1/2 Q8_0=/tmp/gemma-py-q8_0.gguf" --gguf "keep 1/2 Q4_K_M=/tmp/gemma-py-q4_k_m.gguf" \
  --out "$OUT/llamacpp.json"
# 4. serve: one chat completion through the OpenAI client
if [ ! -s "$OUT/serve.json" ]; then
  $IF serve --model $M --port 8765 --threads $T > "$OUT/serve.log" 2>&1 &
  SP=$!
  .venv/bin/python - "$OUT/serve.json" <<'PY'
import json, sys, time
from openai import OpenAI
c = OpenAI(base_url="http://127.0.0.1:8765/v1", api_key="x")
for _ in range(600):
    try:
        models = [m.id for m in c.models.list().data]
        break
    except Exception:
        time.sleep(1)
t = time.perf_counter()
r = c.chat.completions.create(model=models[0], messages=[{"role": "user", "content": "What is the capital of France?"}],
                              max_tokens=24, temperature=0)
out = {"models": models, "model": r.model, "text": r.choices[0].message.content, "usage": r.usage.model_dump(),
       "seconds": time.perf_counter() - t}
json.dump(out, open(sys.argv[1], "w"), indent=1)
print(out)
PY
  kill $SP
fi
