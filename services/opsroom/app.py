"""Wiring of the opsroom service: settings, connections, subscriptions."""

from __future__ import annotations

from hybridpool_shared import topics
from hybridpool_shared.runtime import Service, build_service, serve, skeleton_handler
from services.opsroom.settings import OpsroomSettings


def build(settings: OpsroomSettings) -> Service:
    """Create the service with its subscriptions (not yet connected)."""
    service = build_service(
        "opsroom",
        settings,
        consumes=(topics.MARKET_ACTIVATIONS, topics.MARKET_RESULTS, topics.DISPATCH_REACTIONS),
        produces=(),
    )
    service.consumer.subscribe(topics.MARKET_ACTIVATIONS, skeleton_handler(service.name))
    service.consumer.subscribe(topics.MARKET_RESULTS, skeleton_handler(service.name))
    service.consumer.subscribe(topics.DISPATCH_REACTIONS, skeleton_handler(service.name))
    return service


def main() -> None:
    """Run the service until stopped."""
    serve(build(OpsroomSettings()))
