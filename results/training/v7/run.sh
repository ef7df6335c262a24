#!/bin/sh
# The v7 CPU runs: v6's oracle-target A/B again with lr_predictor 1.5e-4 (v6: 1e-3), the same batches,
# one thread per arm (configs/smollm2-keep75-v7-{oracle,control}-cpu.yaml). Interrupted? Run this
# again: each run resumes from its checkpoint exactly. Logs: runs/v7/<arm>.out.
V=v7 exec sh results/training/v6/run.sh
