"""Price ingestion against a real HTTP server on loopback, the real broker and real Redis.

Each case asserts what reached the topic (read back from the broker) and what was dead-lettered.
Every test writes to its own Redis namespace and its own delivery days, and reads back only
records ingested after it started.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime

import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition
from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry

from hybridpool_shared import topics
from hybridpool_shared.messages import DayAheadPriceIngested, DeadLettered
from hybridpool_shared.timeutil import local_day_bounds, utc_now
from services.price_ingest.adapters.eds import ClientConfig, EdsClient
from services.price_ingest.adapters.store import PriceStore
from services.price_ingest.domain.datasets import DATASETS, TopicKind
from services.price_ingest.metrics import IngestMetrics
from services.price_ingest.pipeline import IngestOptions, Ingestor
from services.price_ingest.scheduler import Scheduler
from services.price_ingest.settings import PriceIngestSettings
from tests.fixtures.prices.eds_server import FakeEds, serving
from tests.infra import Infra, unique

pytestmark = pytest.mark.integration
DAY_AHEAD = DATASETS["DayAheadPrices"]


@pytest.fixture(scope="module")
def eds() -> Iterator[FakeEds]:
    with serving(FakeEds()) as server:
        yield server


@pytest.fixture
async def broker(infra: Infra) -> AsyncIterator[KafkaBroker]:
    kafka = KafkaBroker(infra.kafka_bootstrap, acks="all")
    await kafka.connect()
    yield kafka
    await kafka.stop()


class Rig:
    """One test's ingestor, client and metrics over the shared broker and Redis."""

    def __init__(
        self,
        eds: FakeEds,
        broker: KafkaBroker,
        redis: aioredis.Redis,
        options: IngestOptions | None = None,
        **config: object,
    ) -> None:
        self.registry = CollectorRegistry()
        self.metrics = IngestMetrics(self.registry)
        self.client = EdsClient(
            ClientConfig(base_url=eds.url, backoff_base_s=0.05, **config),  # type: ignore[arg-type]
            on_error=self.metrics.error,
        )
        self.store = PriceStore(redis, namespace=unique("test") + ":")
        self.ingestor = Ingestor(broker, self.store, self.metrics, options or IngestOptions())
        self.started = utc_now()

    async def day(self, day: date, dataset: str = "DayAheadPrices"):  # type: ignore[no-untyped-def]
        start, end = local_day_bounds(day)
        return await self.ingestor.ingest_range(self.client, DATASETS[dataset], start, end)

    def errors(self, dataset: str, kind: str) -> float:
        value = self.registry.get_sample_value(
            "price_ingest_errors_total", {"dataset": dataset, "kind": kind}
        )
        return value or 0.0


async def read_all(bootstrap: str, topic: str, partitions: int) -> list[bytes]:
    """Read a topic from the beginning up to its current end on every partition."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        values: list[bytes] = []
        deadline = time.monotonic() + 30
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            assert time.monotonic() < deadline, "topic not read to its end in 30 s"
            for records in (await consumer.getmany(timeout_ms=500)).values():
                values.extend(r.value for r in records if r.value is not None)
        return values
    finally:
        await consumer.stop()


async def published(infra: Infra, rig: Rig, day: date) -> list[DayAheadPriceIngested]:
    """Return this test's day-ahead prices for a local day, as read back from the broker."""
    start, end = local_day_bounds(day)
    out = []
    for raw in await read_all(infra.kafka_bootstrap, topics.PRICES_DAY_AHEAD.name, 6):
        price = DayAheadPriceIngested.from_json_bytes(raw)
        if price.ingested_at >= rig.started and start <= price.interval_start < end:
            out.append(price)
    return sorted(out, key=lambda p: (p.interval_start, p.area, p.ingested_at))


async def dead_letters(infra: Infra, rig: Rig, dataset: str, day: date) -> list[DeadLettered]:
    """Return this test's dead letters on prices.day_ahead.dlq for a dataset and day."""
    out = []
    for raw in await read_all(infra.kafka_bootstrap, topics.PRICES_DAY_AHEAD.dlq, 1):
        letter = DeadLettered.from_json_bytes(raw)
        text = letter.payload_text or ""
        if letter.dead_lettered_at >= rig.started and dataset in letter.consumer_group and str(day) in text:
            out.append(letter)
    return out


def fixture_prices(eds: FakeEds, day: date) -> dict[tuple[str, str], float]:
    """Return the EUR price per (area, TimeUTC) the server holds for a day."""
    start, end = local_day_bounds(day)
    return {
        (r["PriceArea"], r["TimeUTC"]): r["DayAheadPriceEUR"]
        for r in eds.data["DayAheadPrices"]
        if start <= datetime.fromisoformat(r["TimeUTC"]).replace(tzinfo=UTC) < end
    }


def as_fixture_key(price: DayAheadPriceIngested) -> tuple[str, str]:
    return price.area, price.interval_start.strftime("%Y-%m-%dT%H:%M:%S")


async def test_429_with_retry_after_is_waited_out(
    infra: Infra, eds: FakeEds, broker: KafkaBroker, redis: aioredis.Redis
) -> None:
    day = date(2025, 11, 5)
    rig = Rig(eds, broker, redis)
    before = len(eds.requests_for("DayAheadPrices"))
    eds.fail_next("DayAheadPrices", 429, {"Retry-After": "1"})
    t0 = time.monotonic()
    result = await rig.day(day)
    assert time.monotonic() - t0 >= 1.0
    assert len(eds.requests_for("DayAheadPrices")) - before == 2
    assert rig.errors("DayAheadPrices", "http_429") == 1
    prices = await published(infra, rig, day)
    assert result.published == len(prices) == 192
    assert {as_fixture_key(p): p.price_eur_per_mwh for p in prices} == fixture_prices(eds, day)
    assert await dead_letters(infra, rig, "DayAheadPrices", day) == []


async def test_server_error_then_success(
    infra: Infra, eds: FakeEds, broker: KafkaBroker, redis: aioredis.Redis
) -> None:
    day = date(2025, 11, 6)
    rig = Rig(eds, broker, redis)
    before = len(eds.requests_for("DayAheadPrices"))
    eds.fail_next("DayAheadPrices", 500)
    await rig.day(day)
    assert len(eds.requests_for("DayAheadPrices")) - before == 2
    assert rig.errors("DayAheadPrices", "http_5xx") == 1
    prices = await published(infra, rig, day)
    assert {as_fixture_key(p): p.price_eur_per_mwh for p in prices} == fixture_prices(eds, day)
    assert await dead_letters(infra, rig, "DayAheadPrices", day) == []


async def test_null_dkk_prices_are_published_with_eur_only(
    infra: Infra, eds: FakeEds, broker: KafkaBroker, redis: aioredis.Redis
) -> None:
    day = date(2025, 11, 3)
    rig = Rig(eds, broker, redis)
    await rig.day(day)
    prices = await published(infra, rig, day)
    assert len(prices) == 192
    without_dkk = [p for p in prices if p.price_dkk_per_mwh is None]
    assert len(without_dkk) == 16
    assert all(p.price_eur_per_mwh is not None for p in without_dkk)
    assert await dead_letters(infra, rig, "DayAheadPrices", day) == []


@pytest.mark.parametrize(("day", "quarters"), [(date(2025, 10, 26), 100), (date(2026, 3, 29), 92)])
async def test_dst_days_have_every_quarter_keyed_on_utc(
    infra: Infra, eds: FakeEds, broker: KafkaBroker, redis: aioredis.Redis, day: date, quarters: int
) -> None:
    rig = Rig(eds, broker, redis)
    settings = PriceIngestSettings(kafka_bootstrap=infra.kafka_bootstrap, redis_url=infra.redis_url)
    scheduler = Scheduler(rig.ingestor, rig.client, settings)
    results = await scheduler.ingest_day(TopicKind.DAY_AHEAD, day)
    assert scheduler._complete(day, results)
    start, end = local_day_bounds(day)
    request = eds.requests_for("DayAheadPrices")[-1]
    assert (request["start"], request["end"], request["timezone"]) == (
        start.strftime("%Y-%m-%dT%H:%M"),
        end.strftime("%Y-%m-%dT%H:%M"),
        "UTC",
    )
    prices = await published(infra, rig, day)
    dk1 = [p for p in prices if p.area == "DK1"]
    assert len(dk1) == len({p.interval_start for p in dk1}) == quarters
    assert dk1[0].interval_start == start
    assert dk1[-1].interval_end == end
    assert {as_fixture_key(p): p.price_eur_per_mwh for p in prices} == fixture_prices(eds, day)
    assert await dead_letters(infra, rig, "DayAheadPrices", day) == []


async def test_autumn_day_keeps_its_negative_price(
    infra: Infra, eds: FakeEds, broker: KafkaBroker, redis: aioredis.Redis
) -> None:
    day = date(2025, 10, 26)
    rig = Rig(eds, broker, redis)
    await rig.day(day)
    prices = await published(infra, rig, day)
    assert -4.21 in {p.price_eur_per_mwh for p in prices}


async def test_large_ranges_are_paged(
    infra: Infra, eds: FakeEds, broker: KafkaBroker, redis: aioredis.Redis
) -> None:
    day = date(2025, 11, 4)
    rig = Rig(eds, broker, redis, page_size=50)
    before = len(eds.requests_for("DayAheadPrices"))
    await rig.day(day)
    offsets = [int(r["offset"]) for r in eds.requests_for("DayAheadPrices")[before:]]
    assert offsets == [0, 50, 100, 150]
    prices = await published(infra, rig, day)
    assert {as_fixture_key(p): p.price_eur_per_mwh for p in prices} == fixture_prices(eds, day)
    assert await dead_letters(infra, rig, "DayAheadPrices", day) == []


async def test_malformed_records_are_dead_lettered_and_corrections_republished(
    infra: Infra, eds: FakeEds, broker: KafkaBroker, redis: aioredis.Redis
) -> None:
    day = date(2025, 11, 7)
    rig = Rig(eds, broker, redis)
    result = await rig.day(day)
    assert (result.fetched, result.rejected, result.corrected) == (193, 3, 1)
    letters = await dead_letters(infra, rig, "DayAheadPrices", day)
    assert sorted(letter.error_kind for letter in letters) == ["misaligned", "not_a_number", "null_value"]
    assert all(letter.source_topic == "prices.day_ahead" for letter in letters)
    misaligned = next(letter for letter in letters if letter.error_kind == "misaligned")
    assert json.loads(misaligned.payload_text or "")["TimeUTC"] == "2025-11-07T00:07:00"
    prices = await published(infra, rig, day)
    assert len(prices) == 189 + 1  # 192 quarters x areas, minus 3 rejected, plus one correction
    corrections = [p for p in prices if p.corrects_previous]
    assert len(corrections) == 1
    first = next(p for p in prices if p.kafka_key() == corrections[0].kafka_key() and not p.corrects_previous)
    assert corrections[0].price_eur_per_mwh == pytest.approx((first.price_eur_per_mwh or 0) + 1.0)
    assert rig.errors("DayAheadPrices", "null_value") == 1

    again = await rig.day(day)  # the same range again: nothing new published, nothing parked twice
    assert (again.published, again.rejected) == (0, 3)
    assert len(await published(infra, rig, day)) == 190
    assert len(await dead_letters(infra, rig, "DayAheadPrices", day)) == 3


async def test_latest_curve_is_readable_from_redis(
    infra: Infra, eds: FakeEds, broker: KafkaBroker, redis: aioredis.Redis
) -> None:
    day = date(2026, 3, 29)
    rig = Rig(eds, broker, redis)
    await rig.day(day)
    assert "day_ahead:DK2:spot:none" in await rig.store.curves()
    start, end = local_day_bounds(day)
    curve = await rig.store.read("day_ahead:DK2:spot:none", start, end)
    assert len(curve) == 92
    assert curve == sorted(curve, key=lambda p: p["interval_start"])


async def test_hourly_history_expands_to_92_flagged_quarters_on_the_spring_day(
    infra: Infra, eds: FakeEds, broker: KafkaBroker, redis: aioredis.Redis
) -> None:
    day = date(2025, 3, 30)
    rig = Rig(eds, broker, redis, IngestOptions(expand_hourly=True))
    result = await rig.day(day, "Elspotprices")
    assert (result.fetched, result.published) == (46, 184)
    prices = await published(infra, rig, day)
    dk2 = [p for p in prices if p.area == "DK2"]
    assert len({p.interval_start for p in dk2}) == 92
    assert all(p.expanded_from_hourly and p.interval_minutes == 15 for p in prices)
    hourly = {(r["PriceArea"], r["HourUTC"]): r["SpotPriceEUR"] for r in eds.data["Elspotprices"]}
    for p in prices:
        hour = p.interval_start.replace(minute=0).strftime("%Y-%m-%dT%H:%M:%S")
        assert p.price_eur_per_mwh == hourly[(p.area, hour)]
