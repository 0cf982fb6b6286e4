"""Benchmarks; results are recorded in docs/BENCHMARKS.md."""
