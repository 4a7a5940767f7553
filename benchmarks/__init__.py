"""Benchmarks: they print medians and ratios; performance targets live here, not in unit tests."""
