"""Benchmarks: speed, memory and data loading, Jittor against PyTorch."""
