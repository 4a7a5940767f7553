"""Wiring of the telemetry service: settings, connections, subscriptions."""

from __future__ import annotations

from hybridpool_shared import topics
from hybridpool_shared.runtime import Service, build_service, serve, skeleton_handler
from services.telemetry.settings import TelemetrySettings


def build(settings: TelemetrySettings) -> Service:
    """Create the service with its subscriptions (not yet connected)."""
    service = build_service(
        "telemetry",
        settings,
        consumes=(topics.SITES_TELEMETRY,),
        produces=(topics.SITES_TELEMETRY_QUARTER,),
    )
    service.consumer.subscribe(topics.SITES_TELEMETRY, skeleton_handler(service.name))
    return service


def main() -> None:
    """Run the service until stopped."""
    serve(build(TelemetrySettings()))
