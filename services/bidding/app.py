"""Wiring of the bidding service: settings, connections, subscriptions."""

from __future__ import annotations

from hybridpool_shared import topics
from hybridpool_shared.runtime import Service, build_service, serve, skeleton_handler
from services.bidding.settings import BiddingSettings


def build(settings: BiddingSettings) -> Service:
    """Create the service with its subscriptions (not yet connected)."""
    service = build_service(
        "bidding",
        settings,
        consumes=(
            topics.PRICES_DAY_AHEAD,
            topics.PRICES_RESERVE,
            topics.SITES_BALANCE_PRICE,
            topics.SITES_REGISTRY,
        ),
        produces=(topics.POOL_PLAN, topics.MARKET_BIDS),
    )
    service.consumer.subscribe(topics.PRICES_DAY_AHEAD, skeleton_handler(service.name))
    service.consumer.subscribe(topics.PRICES_RESERVE, skeleton_handler(service.name))
    service.consumer.subscribe(topics.SITES_BALANCE_PRICE, skeleton_handler(service.name))
    service.consumer.subscribe(topics.SITES_REGISTRY, skeleton_handler(service.name))
    return service


def main() -> None:
    """Run the service until stopped."""
    serve(build(BiddingSettings()))
