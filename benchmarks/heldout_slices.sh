# Sourced (`. benchmarks/heldout_slices.sh`) by the compare scripts that read both held-out slices of
# results/refresh/: writes them (a: the first 12 examples per family, the 72 every compare reads; b: examples
# 12..23 per family) and defines `slice_file S` (the slice's path) and `slice_tail S` ("" for a, "b" for b).
export IFPRUNE_CACHE=${IFPRUNE_CACHE:-$HOME/.cache/ifprune} HF_HUB_OFFLINE=1
.venv/bin/python -m ifprune.training.data_sft --out "$IFPRUNE_CACHE/sft_validation_12.jsonl" --val-per-family 12
.venv/bin/python -m ifprune.training.data_sft --out "$IFPRUNE_CACHE/sft_validation_12to24.jsonl" --val-per-family 24 --first 12
slice_file() { if [ "$1" = b ]; then echo "$IFPRUNE_CACHE/sft_validation_12to24.jsonl"; else echo "$IFPRUNE_CACHE/sft_validation_12.jsonl"; fi; }
slice_tail() { if [ "$1" = b ]; then echo b; fi; }
