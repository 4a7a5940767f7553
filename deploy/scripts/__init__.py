"""Renderers for generated deployment files."""
