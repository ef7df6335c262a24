"""Latency and kernel benchmarks (TTFT, decode, selection + loading overhead; 2:4 / int kernels)."""
