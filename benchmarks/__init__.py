"""Benchmark scripts (not tests): run as `python -m benchmarks.NAME`."""
