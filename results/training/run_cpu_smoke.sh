#!/usr/bin/env bash
# The bounded CPU run of docs/training.md: stage 1 then stage 2, for IFPruning and for the
# learned-static baseline with the same data, steps and wall-time caps (max_minutes in each config).
set -euo pipefail
cd "$(dirname "$0")/../.."
export IFPRUNE_CACHE=${IFPRUNE_CACHE:-/tmp/ifpc} HF_HUB_OFFLINE=1
for m in "" "static-"; do
  .venv/bin/ifprune train configs/smollm2-keep50-${m}pretrain.yaml --set progress=false
  .venv/bin/ifprune train configs/smollm2-keep50-${m}sft.yaml --set progress=false
done
