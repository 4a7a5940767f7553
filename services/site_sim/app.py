"""Wiring of the site_sim service: settings, connections, subscriptions."""

from __future__ import annotations

from hybridpool_shared import topics
from hybridpool_shared.runtime import Service, build_service, serve, skeleton_handler
from services.site_sim.settings import SiteSimSettings


def build(settings: SiteSimSettings) -> Service:
    """Create the service with its subscriptions (not yet connected)."""
    service = build_service(
        "site_sim",
        settings,
        consumes=(topics.DISPATCH_COMMANDS,),
        produces=(topics.SITES_TELEMETRY, topics.DISPATCH_ACKS),
    )
    service.consumer.subscribe(topics.DISPATCH_COMMANDS, skeleton_handler(service.name))
    return service


def main() -> None:
    """Run the service until stopped."""
    serve(build(SiteSimSettings()))
