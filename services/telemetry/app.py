"""Wiring of the telemetry service: settings, connections, subscriptions."""

from __future__ import annotations

import gc

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
    service.background.extend(
        (pipeline.follow_registry_forever, pipeline.consume_forever, pipeline.sweep_forever)
    )
    return service


def tune_gc(gen0_threshold: int) -> None:
    """Collect cycles less often and never scan what startup built.

    A batch allocates a few objects per reading (models, tuples, dicts) that reference counting frees;
    at Python's default threshold the cycle collector ran every 700 of them and took about a quarter of
    the process's time draining a backlog.
    """
    gc.freeze()
    if gen0_threshold:
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(gen0_threshold, gen1, gen2)


def main() -> None:
    """Run the service until stopped."""
    settings = TelemetrySettings()
    tune_gc(settings.gc_gen0_threshold)
    serve(build(settings))
