"""Backfill: ingest any date range of any dataset, window by window, outside the running service."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis
from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry

from services.price_ingest.adapters.eds import EdsClient
from services.price_ingest.adapters.replay import ReplayFiles
from services.price_ingest.adapters.store import PriceStore
from services.price_ingest.domain.datasets import Dataset, plan_datasets
from services.price_ingest.domain.schedule import utc_range_of_days
from services.price_ingest.metrics import IngestMetrics
from services.price_ingest.pipeline import Ingestor, IngestResult, RecordSource
from services.price_ingest.settings import PriceIngestSettings

Window = tuple[Dataset, datetime, datetime]
Progress = Callable[[Window, IngestResult], None]


def windows(selector: str, first: date, last: date, window_days: int) -> list[Window]:
    """Split local days first..last (inclusive) into per-dataset UTC windows of at most window_days."""
    out: list[Window] = []
    day = first
    while day <= last:
        chunk_last = min(last, day + timedelta(days=window_days - 1))
        start, end = utc_range_of_days(day, chunk_last)
        out.extend(plan_datasets(selector, start, end))
        day = chunk_last + timedelta(days=1)
    return out


@dataclass
class BackfillTotals:
    """Sums over every window of a backfill."""

    fetched: int = 0
    published: int = 0
    unchanged: int = 0
    corrected: int = 0
    rejected: int = 0

    def add(self, result: IngestResult) -> None:
        """Add one window's counts."""
        self.fetched += result.fetched
        self.published += result.published
        self.unchanged += result.unchanged
        self.corrected += result.corrected
        self.rejected += result.rejected


async def run_windows(
    ingestor: Ingestor,
    source: RecordSource,
    plan: list[Window],
    progress: Progress | None = None,
    prefetch: int = 4,
) -> BackfillTotals:
    """Fetch up to `prefetch` windows ahead (the client bounds requests), ingest them in plan order."""
    totals = BackfillTotals()
    fetches: deque[asyncio.Task[list[Any]]] = deque()
    upcoming = iter(plan)

    def fetch_next() -> None:
        window = next(upcoming, None)
        if window is not None:
            fetches.append(asyncio.create_task(ingestor.fetch(source, *window)))

    for _ in range(max(1, prefetch)):
        fetch_next()
    try:
        for dataset, start, end in plan:
            records = await fetches.popleft()
            fetch_next()
            result = await ingestor.ingest_fetched(source, dataset, start, records)
            totals.add(result)
            if progress:
                progress((dataset, start, end), result)
    finally:
        for task in fetches:
            task.cancel()
        await asyncio.gather(*fetches, return_exceptions=True)
    return totals


def source_for(settings: PriceIngestSettings, metrics: IngestMetrics) -> RecordSource:
    """Return the backfill source: the API, or replay files at their own dates (never shifted)."""
    if settings.source == "api":
        return EdsClient(settings.client_config(), on_error=metrics.error)
    return ReplayFiles(settings.replay_dir)


@contextlib.asynccontextmanager
async def standalone(settings: PriceIngestSettings) -> AsyncIterator[tuple[Ingestor, RecordSource]]:
    """Connect a broker and Redis for a one-off run (CLI, benchmark) and yield an ingestor and source."""
    broker = KafkaBroker(
        settings.resolved_kafka_bootstrap(), client_id="hybridpool-price-backfill", acks="all"
    )
    redis = aioredis.from_url(settings.resolved_redis_url(), decode_responses=False)
    metrics = IngestMetrics(CollectorRegistry())
    source = source_for(settings, metrics)
    await broker.connect()
    try:
        store = PriceStore(redis, settings.curve_retention(), settings.redis_namespace)
        yield Ingestor(broker, store, metrics, settings.ingest_options()), source
    finally:
        await source.aclose()
        await broker.stop()
        await redis.aclose()
