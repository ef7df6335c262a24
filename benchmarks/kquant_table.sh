#!/bin/sh
# The K-quant table for the default model (issue 42): per-task GGUF exports through llama.cpp's own quantiser at
# Q8_0, Q6_K, Q5_K_M and Q4_K_M, the dense model at the same types and the packaged Q4_1 file as users have it:
# size on disk, llama.cpp's decode speed (gguf_decode.py, interleaved, medians) and held-out NLL from llama.cpp's
# own logits on the code families' validation slices (gguf_nll.py, paired against the packaged file).
# Rows: dense (base weights), the shipped keep-3/4 and keep-1/2 artifacts (tuned weights, one plan for the task).
# Each export is skipped when its record exists (run again to resume). THREADS (default 1).
set -e
OUT=${1:-results/speed/kquants}
T=${THREADS:-1}
IF=.venv/bin/ifprune
PY=.venv/bin/python
WORK=${WORK:-/tmp/ifprune-kquants}
TASK="Write or explain Python code for a programming instruction."
export HF_HUB_OFFLINE=1
mkdir -p "$OUT" "$WORK"
lscpu | grep -E "Model name|Flags" | sed 's/Flags:.*\(avx512_bf16\).*/AVX-512 BF16: yes/' > "$OUT/machine.txt"
PACKAGED=$($PY -c "from ifprune.core.loading import default_gguf_path; print(default_gguf_path())")
NLL="--gguf packaged-Q4_1=$PACKAGED"
DEC="--gguf packaged-Q4_1=$PACKAGED"
for ROW in dense:--selector:dense keep75:--keep:0.75 keep50:--keep:0.5; do
  N=${ROW%%:*}; R=${ROW#*:}; FLAG="${R%%:*} ${R#*:}"
  for TY in q8_0 q6_k q5_k_m q4_k_m; do
    F="$WORK/$N-$TY.gguf"
    if [ ! -s "$OUT/export_$N-$TY.json" ] || [ ! -s "$F" ]; then
      $IF export $FLAG --task "$TASK" --format gguf --gguf-type $TY --out "$F" --overwrite --threads $T \
        > "$OUT/export_$N-$TY.json.tmp" 2> "$OUT/export_$N-$TY.log"
      mv "$OUT/export_$N-$TY.json.tmp" "$OUT/export_$N-$TY.json"
    fi
    NLL="$NLL --gguf $N-$TY=$F"
    DEC="$DEC --gguf $N-$TY=$F"
  done
done
$PY benchmarks/gguf_nll.py $NLL --families mbpp code --per-family 24 --threads $T --out "$OUT/nll.json"
$PY benchmarks/gguf_decode.py $DEC --threads $T --repeats 5 --out "$OUT/decode.json"
# the table: size, decode speed, NLL and its paired difference against the packaged file, per row
$PY - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
nll = {r["name"]: r for r in json.loads((out / "nll.json").read_text())["rows"]}
dec = {r["row"]: r for r in json.loads((out / "decode.json").read_text())["rows"]}
ref = dec["packaged-Q4_1"]["median_tok_s"]
lines = ["| file | MB | llama.cpp tok/s | vs packaged | NLL (mbpp + code) | minus packaged [95% CI] | mbpp | code |",
         "|---|---|---|---|---|---|---|---|"]
for name, r in nll.items():
    f = r["families"]
    d = f["all"].get("minus_first")
    diff = f"{d['value']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]" if d else ""
    tps = dec[name]["median_tok_s"]
    lines.append(f"| {name} | {r['bytes'] / 1e6:.1f} | {tps:.1f} | {tps / ref:.2f}x | {f['all']['value']:.3f} | {diff} | "
                 f"{f['mbpp']['value']:.3f} | {f['code']['value']:.3f} |")
(out / "table.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
