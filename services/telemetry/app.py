"""Wiring of the telemetry service: settings, connections, subscriptions."""

from __future__ import annotations

from hybridpool_shared import topics
from hybridpool_shared.runtime import Service, build_service, serve
from services.telemetry.pipeline import TelemetryPipeline
from services.telemetry.settings import TelemetrySettings


def build(settings: TelemetrySettings) -> Service:
    """Create the service with its subscriptions (not yet connected)."""
    service = build_service(
        "telemetry",
        settings,
        consumes=(topics.SITES_TELEMETRY, topics.SITES_REGISTRY),
        produces=(topics.SITES_TELEMETRY_QUARTER,),
    )
    pipeline = TelemetryPipeline(service, settings)
    # sites.telemetry is the hot topic: a raw batch consumer (hybridpool_shared.fastbatch), not FastStream
    service.consumer.subscribe(topics.SITES_REGISTRY, pipeline.on_site)
    service.background.extend((pipeline.consume_forever, pipeline.sweep_forever))
    return service


def main() -> None:
    """Run the service until stopped."""
    serve(build(TelemetrySettings()))
