"""Tooling, never installed: the harness that drives real stations, process clean-up, the chaos run.

Imported by tests, benchmarks (``scripts/bench``) and the chaos run; the product never imports it.
"""
