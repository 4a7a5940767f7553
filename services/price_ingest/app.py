"""Wiring of the price_ingest service: settings, connections, sources, schedules and routes."""

from __future__ import annotations

import asyncio
import logging
from datetime import time

from hybridpool_shared import topics
from hybridpool_shared.runtime import Service, build_service, serve
from services.price_ingest.adapters.eds import EdsClient
from services.price_ingest.adapters.replay import ReplayFiles, ShiftedReplay
from services.price_ingest.adapters.store import PriceStore
from services.price_ingest.api import add_routes
from services.price_ingest.domain.datasets import DATASETS
from services.price_ingest.metrics import IngestMetrics
from services.price_ingest.pipeline import Ingestor, RecordSource
from services.price_ingest.scheduler import Scheduler
from services.price_ingest.settings import PriceIngestSettings

LOGGER = logging.getLogger(__name__)
FRESHNESS_REFRESH_S = 15.0


def make_source(settings: PriceIngestSettings, metrics: IngestMetrics) -> RecordSource:
    """Return the configured record source: the EDS API, or replay files (shifted onto today)."""
    if settings.source == "api":
        return EdsClient(settings.client_config(), on_error=metrics.error)
    files = ReplayFiles(settings.replay_dir)
    return ShiftedReplay(files) if settings.replay_shift_to_today else files


def build(settings: PriceIngestSettings) -> Service:
    """Create the service with its schedules and routes (not yet connected)."""
    service = build_service(
        "price_ingest",
        settings,
        consumes=(),
        produces=(topics.PRICES_DAY_AHEAD, topics.PRICES_IMBALANCE, topics.PRICES_RESERVE),
    )
    # Produces only; its inputs arrive over HTTP or from files.
    metrics = IngestMetrics(service.metrics.registry)
    store = PriceStore(service.redis, settings.curve_retention(), settings.redis_namespace)
    ingestor = Ingestor(service.broker, store, metrics, settings.ingest_options())
    source = make_source(settings, metrics)
    # Replaying, "tomorrow" is known at once: downstream services always see today and tomorrow.
    publish_at = time(0, 0) if settings.source == "replay" else None
    scheduler = Scheduler(ingestor, source, settings, publish_at=publish_at)
    add_routes(service.api, store)

    async def replay_history() -> None:
        files = ReplayFiles(settings.replay_dir)
        for dataset in DATASETS.values():
            records = files.records(dataset)
            if records:
                result = await ingestor.ingest_records(dataset, records, f"replay:{dataset.name}")
                LOGGER.info("replayed %s: %s", dataset.name, result)

    async def day_ahead() -> None:
        await scheduler.loop(scheduler.day_ahead_once, "day-ahead")

    async def imbalance() -> None:
        await scheduler.loop(scheduler.imbalance_once, "imbalance")

    async def reserve() -> None:
        await scheduler.loop(scheduler.reserve_once, "reserve")

    async def freshness() -> None:
        try:
            while True:
                metrics.refresh_freshness()
                await asyncio.sleep(FRESHNESS_REFRESH_S)
        finally:
            await source.aclose()

    if settings.source == "replay" and settings.replay_history:
        service.background.append(replay_history)
    if settings.scheduler_enabled:
        service.background.extend([day_ahead, imbalance, reserve])
    service.background.append(freshness)
    return service


def main() -> None:
    """Run the service until stopped."""
    serve(build(PriceIngestSettings()))
