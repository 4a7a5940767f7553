"""Ingests day-ahead, imbalance and reserve prices."""
