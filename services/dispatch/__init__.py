"""Turns activations into commands to sites and measures reactions."""
