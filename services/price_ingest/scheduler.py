"""Periodic fetching: day-ahead after publication until complete, imbalance polls, daily capacity."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import date, datetime, time, timedelta

from hybridpool_shared.timeutil import local_day_bounds, utc_now
from services.price_ingest.domain.datasets import DATASETS, TopicKind, plan_datasets
from services.price_ingest.domain.schedule import (
    day_ahead_days_due,
    expected_intervals,
    local_today,
    seconds_until_next_publication,
    split_by_local_day,
)
from services.price_ingest.pipeline import Ingestor, IngestResult, RecordSource
from services.price_ingest.settings import PriceIngestSettings

LOGGER = logging.getLogger(__name__)
MAX_IDLE_S = 3600.0


class Scheduler:
    """The service's fetch loops over one record source."""

    def __init__(
        self,
        ingestor: Ingestor,
        source: RecordSource,
        settings: PriceIngestSettings,
        clock: Callable[[], datetime] = utc_now,
        publish_at: time | None = None,
    ) -> None:
        self.ingestor = ingestor
        self.source = source
        self.settings = settings
        self.clock = clock
        self.publish_at = publish_at or settings.day_ahead_publish_local_time
        self.complete_days: set[date] = set()

    async def ingest_day(self, kind: TopicKind, day: date) -> list[IngestResult]:
        """Ingest every dataset of a topic kind for one Copenhagen day."""
        start, end = local_day_bounds(day)
        return [
            await self.ingestor.ingest_range(self.source, dataset, s, e)
            for dataset, s, e in plan_datasets(kind.value, start, end)
        ]

    def _complete(self, day: date, results: list[IngestResult]) -> bool:
        areas = self.ingestor.options.areas
        for result in results:
            minutes = 15 if self.ingestor.options.expand_hourly else _minutes(result.dataset)
            if any(result.valid_by_area[a] < expected_intervals(day, minutes) for a in areas):
                return False
        return True

    async def day_ahead_once(self) -> float:
        """Ingest due day-ahead days not yet complete; return seconds until the next attempt."""
        now = self.clock()
        due = day_ahead_days_due(now, self.publish_at)
        self.complete_days &= set(due)
        for day in due:
            if day in self.complete_days:
                continue
            if self._complete(day, await self.ingest_day(TopicKind.DAY_AHEAD, day)):
                self.complete_days.add(day)
            else:
                LOGGER.info("day-ahead prices for %s not complete yet", day)
        if not set(due) <= self.complete_days:
            return self.settings.day_ahead_retry_s
        return min(MAX_IDLE_S, seconds_until_next_publication(now, self.publish_at))

    async def imbalance_once(self) -> float:
        """Ingest the recent imbalance / mFRR energy window; return seconds until the next poll."""
        now = self.clock()
        window_start = now - timedelta(hours=self.settings.imbalance_lookback_h)
        for _, start, end in split_by_local_day(window_start, now + timedelta(minutes=15)):
            for dataset, s, e in plan_datasets(TopicKind.IMBALANCE.value, start, end):
                await self.ingestor.ingest_range(self.source, dataset, s, e)
        return self.settings.imbalance_poll_s

    async def reserve_once(self) -> float:
        """Ingest today's and tomorrow's capacity prices; return seconds until the next poll."""
        today = local_today(self.clock())
        for day in (today, today + timedelta(days=1)):
            await self.ingest_day(TopicKind.RESERVE, day)
        return self.settings.reserve_poll_s

    async def loop(self, step: Callable[[], Awaitable[float]], name: str) -> None:
        """Run one step forever, sleeping what it asks; failures are logged and retried later."""
        while True:
            try:
                wait = await step()
            except Exception:
                LOGGER.exception("%s failed; retrying in %.0f s", name, self.settings.day_ahead_retry_s)
                wait = self.settings.day_ahead_retry_s
            await asyncio.sleep(wait)


def _minutes(dataset_name: str) -> int:
    return DATASETS[dataset_name].minutes
