#!/bin/sh
# The v2 CPU run at keep 1/2: stage 1 (continued pre-training) then stage 2 (SFT) from it, on 2 cores.
# Run from the repository root. Interrupted? Run this again: each stage resumes from its checkpoint
# exactly (same batches), and a finished stage is not re-trained (its artifact is rewritten as is).
set -e
THREADS=${THREADS:-2}
ifprune train configs/smollm2-keep50-v2-pretrain-cpu.yaml --threads "$THREADS"
ifprune train configs/smollm2-keep50-v2-sft-cpu.yaml --threads "$THREADS"
