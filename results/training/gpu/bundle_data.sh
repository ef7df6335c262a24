#!/bin/sh
# The training data a GPU session needs (the SFT mixture's files and the stage-1 files), as one xz tar for the
# device tool's 64 MiB call: writes .device-blobs/part1/data.tar.xz (about 9 MB; run after
# ../shared/tools/device-blobs.sh, which recreates .device-blobs). results/training/gpu/device.sh unpacks it.
set -e
DATA=${IFPRUNE_DATA:-../shared/data}
mkdir -p .device-blobs/part1
tar -cf - -C "$DATA" gsm8k/train.jsonl math/math_test_minus500.jsonl mbpp/mbpp.jsonl instruct \
  pretrain/llamafactory/c4_demo.jsonl pretrain/openai_evals/text_compression_samples.jsonl \
  pretrain/llamafactory/wiki_demo.txt pretrain/openai_evals/owt_5.jsonl pretrain/openai_evals/wikipedia_5.jsonl \
  pretrain/sotu/sotu.jsonl | xz -9 -T2 > .device-blobs/part1/data.tar.xz
ls -l .device-blobs/part1/data.tar.xz
