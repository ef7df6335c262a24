"""Compressing a compact model further: 2:4 semi-structured sparsity, int8/int4 weight
quantisation, short recovery fine-tuning, and the `ifprune compress` pipeline that chains them."""
