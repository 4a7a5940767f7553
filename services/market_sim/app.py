"""Wiring of the market_sim service: settings, connections, subscriptions."""

from __future__ import annotations

from hybridpool_shared import topics
from hybridpool_shared.runtime import Service, build_service, serve, skeleton_handler
from services.market_sim.settings import MarketSimSettings


def build(settings: MarketSimSettings) -> Service:
    """Create the service with its subscriptions (not yet connected)."""
    service = build_service(
        "market_sim",
        settings,
        consumes=(topics.MARKET_BIDS,),
        produces=(topics.MARKET_RESULTS, topics.MARKET_ACTIVATIONS, topics.GRID_FREQUENCY),
    )
    service.consumer.subscribe(topics.MARKET_BIDS, skeleton_handler(service.name))
    return service


def main() -> None:
    """Run the service until stopped."""
    serve(build(MarketSimSettings()))
