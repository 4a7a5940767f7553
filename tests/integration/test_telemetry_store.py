"""The telemetry service's edges on a real server: what one batch writes a restart loads, a restarted
process takes over its silent sites' open quarters, every replica hears each registry change."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import redis.asyncio as aioredis

from hybridpool_shared import topics
from hybridpool_shared.fastbatch import partition_of
from hybridpool_shared.messages import (
    AggregateQuality,
    SiteMasterDataChanged,
    TelemetryReported,
)
from hybridpool_shared.runtime import build_service
from hybridpool_shared.sitestate import GatewayStatus, SiteLiveState
from hybridpool_shared.timeutil import utc_now
from services.telemetry import adapters
from services.telemetry.adapters import LiveStateStore, RegistryTail
from services.telemetry.domain.quarters import ClosedQuarter, QuarterAggregator, sample_of
from services.telemetry.domain.state import Timing, advance, state_json
from services.telemetry.pipeline import TelemetryPipeline
from services.telemetry.settings import TelemetrySettings
from tests.infra import Infra, fail_once, produce, registered_villa, unique, villa_reading

pytestmark = pytest.mark.integration
OWN_DB = 6  # a database of its own: the restarted process reads every silent site in it


def _reading(site_id: str, meter_kwh: float, age_s: float = 30.0) -> TelemetryReported:
    return villa_reading(site_id, utc_now() - timedelta(seconds=age_s), meter_kwh)


async def test_load_sites_returns_what_a_batch_wrote_site_by_site(
    redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(adapters, "READ_CHUNK", 2)  # several read calls, each one's triples kept in line
    store = LiveStateStore(redis)
    sites = [unique("stored-villa") for _ in range(5)]
    written = sites[:4]  # the fifth never reported
    agg = QuarterAggregator()
    docs: dict[str, bytes] = {}
    for i, site_id in enumerate(written):
        reading = _reading(site_id, 100.0 + i)
        agg.add(site_id, sample_of(reading))
        docs[site_id] = state_json(reading, advance(None, reading), utc_now(), Timing())
    quarters = {site_id: b"S" + agg.snapshot(site_id) for site_id in written[:3]}
    await store.save_json(docs, time.time(), quarters)
    await store.set_timing(written[1], (20, 25))

    loaded = await store.load_sites(sites)

    assert loaded.site_ids == set(sites)
    assert sorted(loaded.states) == sorted(written)
    assert [loaded.states[s].meter_reading_kwh for s in written] == [100.0, 101.0, 102.0, 103.0]
    assert loaded.quarters == {s: q[1:] for s, q in quarters.items()}  # the silent site has none
    assert loaded.timings == {written[1]: (20, 25)}


async def test_a_status_mark_never_replaces_a_state_a_batch_wrote_after_it_was_read(
    redis: aioredis.Redis,
) -> None:
    store = LiveStateStore(redis)
    racing, quiet = unique("raced-villa"), unique("quiet-villa")

    async def report(site_id: str, meter_kwh: float, age_s: float) -> None:
        reading = _reading(site_id, meter_kwh, age_s)
        doc = state_json(reading, advance(None, reading), reading.measured_at, Timing())
        await store.save_json({site_id: doc}, time.time(), {})

    def stale(raw: bytes) -> bytes:
        state = SiteLiveState.model_validate_json(raw)
        return state.model_copy(update={"gateway_status": GatewayStatus.STALE}).model_dump_json().encode()

    await report(racing, 100.0, age_s=600.0)
    await report(quiet, 200.0, age_s=600.0)
    read = await store.load_raw([racing, quiet])  # the sweep reads both as silent ...
    await report(racing, 101.0, age_s=1.0)  # ... a batch writes a fresh reading of one meanwhile

    replaced = await store.replace_states({s: (raw, stale(raw)) for s, raw in read.items()})

    states = await store.load([racing, quiet])
    assert replaced == 1
    assert (states[racing].meter_reading_kwh, states[racing].gateway_status) == (101.0, GatewayStatus.OK)
    assert (states[quiet].meter_reading_kwh, states[quiet].gateway_status) == (200.0, GatewayStatus.STALE)


class _Quarters:
    """Stands in for the quarter producer: keeps what the pipeline publishes; the first `fail` sends fail."""

    def __init__(self, fail: int = 0) -> None:
        self.sent: list[ClosedQuarter] = []
        self.fail = fail

    async def enqueue(self, quarters: list[ClosedQuarter]) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.fail:
            self.fail -= 1
            done.set_exception(ConnectionError("broker unavailable"))
        else:
            self.sent += quarters
            done.set_result(None)
        return done


@contextlib.asynccontextmanager
async def _restarted(infra: Infra) -> AsyncIterator[tuple[TelemetryPipeline, set[str]]]:
    """A process restarted on partitions 1 and 3 of 4, with eight sites silent for 50 minutes before it.

    Their quarters are open in Redis; yields the pipeline and the silent sites of its own partitions.
    """
    base = infra.redis_url.rsplit("/", 1)[0] if infra.redis_url.count("/") > 2 else infra.redis_url
    settings = TelemetrySettings(kafka_bootstrap="127.0.0.1:9", redis_url=f"{base}/{OWN_DB}")
    service = build_service("telemetry", settings, consumes=(topics.SITES_TELEMETRY,), produces=())
    await service.redis.flushdb()
    try:
        silent_for_s = 3000.0
        sites = [f"silent-villa-{i}" for i in range(8)]
        ours = {s for s in sites if partition_of(s.encode(), 4) in {1, 3}}
        assert 0 < len(ours) < len(sites)
        agg, docs = QuarterAggregator(), {}
        for i, site_id in enumerate(sites):
            reading = _reading(site_id, 100.0 + i, age_s=silent_for_s)
            agg.add(site_id, sample_of(reading))
            docs[site_id] = state_json(reading, advance(None, reading), reading.measured_at, Timing())
        quarters = {site_id: b"S" + agg.snapshot(site_id) for site_id in sites}
        await LiveStateStore(service.redis).save_json(docs, time.time() - silent_for_s, quarters)
        pipeline = TelemetryPipeline(service, settings)
        await pipeline.on_assigned({1, 3}, 4)
        yield pipeline, ours
    finally:
        await service.redis.flushdb()
        await service.redis.aclose()


def _assert_idle_quarters_closed(sent: list[ClosedQuarter], ours: set[str]) -> None:
    """Each silent site: its last reading's quarter, then at least two missing ones (50 minutes)."""
    assert {q.site_id for q in sent} == ours  # the other partitions' sites are another replica's
    for site_id in ours:
        first = min((q for q in sent if q.site_id == site_id), key=lambda q: q.interval_start)
        assert first.readings == 1
        later = [q for q in sent if q.site_id == site_id and q is not first]
        assert len(later) >= 2
        assert {q.quality for q in later} == {AggregateQuality.MISSING}


async def test_a_site_silent_since_before_a_restart_gets_its_idle_quarters_closed(infra: Infra) -> None:
    async with _restarted(infra) as (pipeline, ours):
        producer = _Quarters()
        pipeline.producer = producer  # type: ignore[assignment]
        await pipeline.sweep()
        _assert_idle_quarters_closed(producer.sent, ours)


async def test_silent_sites_a_failed_load_missed_are_taken_over_by_the_next_sweep(
    infra: Infra, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _restarted(infra) as (pipeline, ours):
        producer = _Quarters()
        pipeline.producer = producer  # type: ignore[assignment]
        monkeypatch.setattr(
            pipeline.store,
            "load_sites",
            fail_once(pipeline.store.load_sites, ConnectionError("redis unavailable")),
        )
        with pytest.raises(ConnectionError):
            await pipeline.sweep()
        assert producer.sent == []
        await pipeline.sweep()
        _assert_idle_quarters_closed(producer.sent, ours)


async def test_silent_sites_whose_closing_failed_are_closed_by_the_next_sweep(infra: Infra) -> None:
    """A failed finish makes the process forget what it holds; the sites it had taken over come back."""
    async with _restarted(infra) as (pipeline, ours):
        producer = _Quarters(fail=1)
        pipeline.producer = producer  # type: ignore[assignment]
        with pytest.raises(ConnectionError):
            await pipeline.sweep()
        assert producer.sent == []
        await pipeline.sweep()
        _assert_idle_quarters_closed(producer.sent, ours)


async def _register(infra: Infra, site: SiteMasterDataChanged) -> None:
    await produce(infra.kafka_bootstrap, topics.SITES_REGISTRY.name, site.to_json_bytes(), site.kafka_key())


async def _next_of(tail: RegistryTail, prefix: str) -> SiteMasterDataChanged:
    """The next change the tail brings of this test's sites (other tests register sites too)."""
    async with asyncio.timeout(60):
        async for site in tail.changes():
            if site.site_id.startswith(prefix):
                return site
    raise AssertionError("the tail ended")


async def test_every_replica_tail_hears_each_registry_change_from_its_start_and_resumes_after_a_stop(
    infra: Infra,
) -> None:
    prefix = unique("tailed")
    await _register(
        infra, registered_villa(f"{prefix}-before", lockout_minutes=20)
    )  # before the tails: not theirs to hear
    tails = [RegistryTail(infra.kafka_bootstrap) for _ in range(2)]  # two replicas
    try:
        for tail in tails:
            await tail.start()
        await _register(infra, registered_villa(f"{prefix}-changed", lockout_minutes=25))
        heard = [await _next_of(tail, prefix) for tail in tails]
        assert [(s.site_id, s.lockout_minutes) for s in heard] == [(f"{prefix}-changed", 25)] * 2

        await tails[0].stop()  # e.g. the broker connection broke
        await _register(infra, registered_villa(f"{prefix}-meanwhile", lockout_minutes=30))
        tails[0] = RegistryTail(infra.kafka_bootstrap, tails[0].positions)
        await tails[0].start()
        resumed = await _next_of(tails[0], prefix)
        assert (resumed.site_id, resumed.lockout_minutes) == (f"{prefix}-meanwhile", 30)  # none lost
    finally:
        for tail in tails:
            await tail.stop()
