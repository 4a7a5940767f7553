"""The ingest use case: fetch a dataset range, normalise, publish only new or changed prices, park rejects."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from faststream.kafka import KafkaBroker

from hybridpool_shared import topics
from hybridpool_shared.messaging import publish
from hybridpool_shared.timeutil import utc_now
from hybridpool_shared.topics import TopicSpec
from services.price_ingest.adapters import dlq
from services.price_ingest.adapters.store import PriceStore
from services.price_ingest.domain.datasets import Dataset, TopicKind
from services.price_ingest.domain.normalise import Context, PriceMessage, Rejection, normalise
from services.price_ingest.domain.upsert import fingerprint, plan_upserts, raw_fingerprint
from services.price_ingest.metrics import IngestMetrics

LOGGER = logging.getLogger(__name__)
TOPIC_OF: dict[TopicKind, TopicSpec] = {
    TopicKind.DAY_AHEAD: topics.PRICES_DAY_AHEAD,
    TopicKind.IMBALANCE: topics.PRICES_IMBALANCE,
    TopicKind.RESERVE: topics.PRICES_RESERVE,
}
PUBLISH_CHUNK = 500
PublishFn = Callable[[TopicSpec, PriceMessage], Awaitable[None]]


class RecordSource(Protocol):
    """Where raw records come from: the EDS API or replay files."""

    async def fetch(
        self, dataset: Dataset, start: datetime, end: datetime, filters: dict[str, list[str]]
    ) -> list[Any]:
        """Return the dataset's raw records with UTC start in [start, end)."""

    def label(self, dataset: Dataset, start: datetime) -> str:
        """Return the `source` written on prices fetched for dataset from start on."""

    async def aclose(self) -> None:
        """Release resources."""


@dataclass(frozen=True)
class IngestOptions:
    """What to accept and how: areas, FCR auction types, hourly expansion."""

    areas: tuple[str, ...] = ("DK1", "DK2")
    auction_types: tuple[str, ...] = ("Total",)
    expand_hourly: bool = False


@dataclass
class IngestResult:
    """Counts of one ingest run, plus valid intervals per area (for completeness checks)."""

    dataset: str
    fetched: int = 0
    published: int = 0
    unchanged: int = 0
    corrected: int = 0
    rejected: int = 0
    valid_by_area: Counter[str] = field(default_factory=Counter)
    latest_end: datetime | None = None


class Ingestor:
    """Runs the ingest use case against a broker and a price store."""

    def __init__(
        self,
        broker: KafkaBroker,
        store: PriceStore,
        metrics: IngestMetrics,
        options: IngestOptions,
        group: str = "hybridpool.price_ingest",
    ) -> None:
        self.broker = broker
        self.store = store
        self.metrics = metrics
        self.options = options
        self.group = group

    async def fetch(
        self, source: RecordSource, dataset: Dataset, start: datetime, end: datetime
    ) -> list[Any]:
        """Fetch the raw records of [start, end) of a dataset, filtered to this ingestor's areas."""
        filters = dataset.request_filter(self.options.areas, self.options.auction_types)
        return await source.fetch(dataset, start, end, filters)

    async def ingest_fetched(
        self, source: RecordSource, dataset: Dataset, start: datetime, records: list[Any]
    ) -> IngestResult:
        """Ingest records fetched for a window starting at start, and record the successful fetch."""
        result = await self.ingest_records(dataset, records, source.label(dataset, start))
        self.metrics.succeeded(dataset.name, result.latest_end.timestamp() if result.latest_end else None)
        if result.published or result.rejected:
            LOGGER.info(
                "%s from %s: %s records, %s published (%s corrections), %s unchanged, %s rejected",
                dataset.name,
                start.isoformat(),
                result.fetched,
                result.published,
                result.corrected,
                result.unchanged,
                result.rejected,
            )
        return result

    async def ingest_range(
        self, source: RecordSource, dataset: Dataset, start: datetime, end: datetime
    ) -> IngestResult:
        """Fetch [start, end) of a dataset from a source and ingest it."""
        records = await self.fetch(source, dataset, start, end)
        return await self.ingest_fetched(source, dataset, start, records)

    async def ingest_records(self, dataset: Dataset, records: list[Any], source: str) -> IngestResult:
        """Normalise records, publish new or changed prices in order, and dead-letter rejections."""
        ctx = Context(source, utc_now(), self.options.areas, self.options.expand_hourly)
        batch = normalise(dataset, records, ctx)
        result = IngestResult(dataset.name, fetched=len(records))
        spec = TOPIC_OF[dataset.kind]
        await self._publish(dataset, spec, batch.prices, result)
        for rejection in batch.rejections:
            await self._reject(spec, rejection, result)
        for price in batch.prices:
            result.valid_by_area[price.area] += 1
            if result.latest_end is None or price.interval_end > result.latest_end:
                result.latest_end = price.interval_end
        return result

    async def _publish(
        self, dataset: Dataset, spec: TopicSpec, prices: list[PriceMessage], result: IngestResult
    ) -> None:
        keyed = [(p.kafka_key(), fingerprint(p)) for p in prices]
        previous = await self.store.published(spec.name, [k for k, _ in keyed])
        plan = plan_upserts(keyed, previous)
        by_key_fp = {(k, fp): p for p, (k, fp) in zip(prices, keyed, strict=True)}
        todo = []
        for key, fp, is_correction in plan.publish:
            message = by_key_fp[(key, fp)]
            if is_correction:
                LOGGER.warning("correction on %s %s: republishing a changed value", spec.name, key.decode())
                message = message.model_copy(update={"corrects_previous": True})
            todo.append((key, fp, message))
        for chunk in _chunks_with_unique_keys(todo, PUBLISH_CHUNK):
            await asyncio.gather(*(publish(self.broker, spec, m) for _, _, m in chunk))
            await self.store.remember(spec.name, dataset.kind.value, chunk)
        result.published += len(todo)
        result.unchanged += plan.unchanged
        result.corrected += plan.corrected
        self.metrics.records.labels(dataset=dataset.name, outcome="published").inc(len(todo) - plan.corrected)
        self.metrics.records.labels(dataset=dataset.name, outcome="corrected").inc(plan.corrected)
        self.metrics.records.labels(dataset=dataset.name, outcome="unchanged").inc(plan.unchanged)

    async def _reject(self, spec: TopicSpec, rejection: Rejection, result: IngestResult) -> None:
        result.rejected += 1
        self.metrics.records.labels(dataset=rejection.dataset, outcome="rejected").inc()
        self.metrics.error(rejection.dataset, rejection.kind)
        digest = raw_fingerprint(rejection.kind, rejection.record)
        if await self.store.was_dead_lettered(spec.name, digest):
            return
        LOGGER.warning("rejected %s record (%s): %s", rejection.dataset, rejection.kind, rejection.reason)
        await dlq.park(self.broker, spec, rejection, self.group)
        await self.store.mark_dead_lettered(spec.name, digest)


def _chunks_with_unique_keys(
    items: list[tuple[bytes, str, PriceMessage]], size: int
) -> list[list[tuple[bytes, str, PriceMessage]]]:
    """Split into chunks of at most size in which no key repeats, so per-key order is kept."""
    chunks: list[list[tuple[bytes, str, PriceMessage]]] = [[]]
    seen: set[bytes] = set()
    for item in items:
        if len(chunks[-1]) >= size or item[0] in seen:
            chunks.append([])
            seen = set()
        chunks[-1].append(item)
        seen.add(item[0])
    return [c for c in chunks if c]
