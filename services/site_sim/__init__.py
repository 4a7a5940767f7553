"""Simulates villas with hybrid heat pumps."""
