"""Pure planning and bidding logic of the bidding service (no I/O)."""
