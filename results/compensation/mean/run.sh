#!/bin/sh
# Compensation mode "mean" (the dropped channels' calibration mean output as a bias; issue 45's cheaper compensation
# for models whose d_ffn^2 moments do not fit) against none and the least-squares refit (calibration): GRIFFIN per
# prompt at keep 1/2 and 3/4, NLL of the reference answers on both held-out validation slices (144 examples), then
# paired differences mean - none and mean - calibration. $THREADS threads (default 1); resumable.
set -e
D=results/compensation/mean
. benchmarks/heldout_slices.sh
for K in 50 75; do
  KEEPS=0.$K; [ $K = 50 ] && KEEPS=0.5
  KEEPS=$KEEPS COMPENSATIONS="none mean calibration" THREADS=${THREADS:-1} nll_slices $D/keep$K griffin
  keep_examples $D/keep$K
  for B in griffin griffin+calibration; do
    .venv/bin/python benchmarks/paired_nll.py $D/keep$K/results.json "$B" "griffin+mean" \
      --pool $D/keep${K}b/results.json --out $D/paired$K-mean-vs-$B.json
  done
done
