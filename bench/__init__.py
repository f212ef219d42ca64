"""Benchmarks: each prints rates and ratios measured side by side in one run."""
