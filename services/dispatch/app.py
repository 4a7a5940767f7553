"""Wiring of the dispatch service: settings, connections, subscriptions."""

from __future__ import annotations

from hybridpool_shared import topics
from hybridpool_shared.runtime import Service, build_service, serve, skeleton_handler
from services.dispatch.settings import DispatchSettings


def build(settings: DispatchSettings) -> Service:
    """Create the service with its subscriptions (not yet connected)."""
    service = build_service(
        "dispatch",
        settings,
        consumes=(
            topics.MARKET_ACTIVATIONS,
            topics.GRID_FREQUENCY,
            topics.POOL_PLAN,
            topics.SITES_TELEMETRY,
            topics.DISPATCH_ACKS,
        ),
        produces=(topics.DISPATCH_COMMANDS, topics.DISPATCH_REACTIONS),
    )
    service.consumer.subscribe(topics.MARKET_ACTIVATIONS, skeleton_handler(service.name))
    service.consumer.subscribe(topics.GRID_FREQUENCY, skeleton_handler(service.name))
    service.consumer.subscribe(topics.POOL_PLAN, skeleton_handler(service.name))
    service.consumer.subscribe(topics.SITES_TELEMETRY, skeleton_handler(service.name))
    service.consumer.subscribe(topics.DISPATCH_ACKS, skeleton_handler(service.name))
    return service


def main() -> None:
    """Run the service until stopped."""
    serve(build(DispatchSettings()))
