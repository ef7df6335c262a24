#!/bin/sh
# Validation NLL per family for the v7 oracle-target A/B at keep 3/4 (v6's, at lr_predictor 1.5e-4):
# v6's compare script on v7's arms (runs/v7/keep75-{oracle,control}/artifact), the same 72 examples.
V=v7 TITLE="v7 training (oracle-target A/B at keep 3/4, lr_predictor 1.5e-4)" exec sh results/training/v6/compare.sh "$@"
