"""Plans the pool and bids its flexibility."""
