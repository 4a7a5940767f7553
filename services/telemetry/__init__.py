"""Validates site readings, keeps live state, aggregates quarters."""
