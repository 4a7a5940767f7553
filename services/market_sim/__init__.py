"""Plays the TSO: clears bids, activates the pool, emits frequency."""
