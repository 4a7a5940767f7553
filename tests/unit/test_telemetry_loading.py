"""Sites in memory: loading unseen ones ahead of their batch (used when it covers them, discarded after a
reset), forgetting those whose partition moved to another replica, registry changes outranking loads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka.partitioner import DefaultPartitioner

from hybridpool_shared import topics
from hybridpool_shared.fastbatch import partition_of
from hybridpool_shared.messages import SiteMasterDataChanged
from hybridpool_shared.runtime import build_service
from services.telemetry.adapters import LoadedSites
from services.telemetry.domain.quarters import sample_of
from services.telemetry.domain.state import Timing, advance
from services.telemetry.loading import SiteLoader
from services.telemetry.pipeline import TelemetryPipeline
from services.telemetry.settings import TelemetrySettings
from tests.infra import registered_villa, villa_reading


class _Store:
    """Stands in for LiveStateStore: every site has a state and a quarter; counts the loads."""

    def __init__(self, fail_first: bool = False, held: bool = False) -> None:
        self.loads: list[list[str]] = []
        self.finished: list[list[str]] = []
        self.called = asyncio.Event()
        self.gate = asyncio.Event()  # loads finish once it is set
        if not held:
            self.gate.set()
        self.fail_first = fail_first

    async def load_sites(self, site_ids: Sequence[str]) -> LoadedSites:
        self.loads.append(list(site_ids))
        self.called.set()
        await self.gate.wait()
        if self.fail_first and len(self.loads) == 1:
            raise ConnectionError("redis went away")
        self.finished.append(list(site_ids))
        states: dict[str, Any] = {s: f"state of {s}" for s in site_ids}
        return LoadedSites(
            set(site_ids), states, {s: s.encode() for s in site_ids}, {s: (15, 20) for s in site_ids}
        )


def _loader(store: _Store) -> SiteLoader:
    return SiteLoader(store)  # type: ignore[arg-type]


async def test_a_load_started_ahead_is_taken_and_only_the_rest_loaded_again() -> None:
    store = _Store()
    loader = _loader(store)
    loader.start(["a", "b"], generation=0)
    await asyncio.wait_for(store.called.wait(), 5)
    assert store.loads == [["a", "b"]]  # under way before the batch asks for it
    loaded = await loader.load(["a", "b", "c"], generation=0)
    assert store.loads == [["a", "b"], ["c"]]
    assert loaded.site_ids == {"a", "b", "c"}
    states: dict[str, Any] = loaded.states
    assert states["b"] == "state of b"
    assert loaded.quarters["c"] == b"c"
    assert loaded.timings["a"] == (15, 20)


async def test_a_load_started_before_a_reset_is_not_used() -> None:
    store = _Store(held=True)
    loader = _loader(store)
    loader.start(["a"], generation=0)
    await asyncio.wait_for(store.called.wait(), 5)
    pending = asyncio.create_task(loader.load(["a"], generation=1))
    await asyncio.sleep(0)
    store.gate.set()
    loaded = await pending
    assert store.loads == [["a"], ["a"]]
    assert store.finished == [["a"]]  # the first was cancelled
    assert loaded.site_ids == {"a"}


async def test_a_failed_load_ahead_is_done_again_when_needed() -> None:
    store = _Store(fail_first=True)
    loader = _loader(store)
    loader.start(["a"], generation=0)
    loaded = await loader.load(["a"], generation=0)
    assert store.loads == [["a"], ["a"]]
    states: dict[str, Any] = loaded.states
    assert states == {"a": "state of a"}


async def test_a_discarded_load_ahead_is_cancelled() -> None:
    store = _Store(held=True)
    loader = _loader(store)
    loader.start(["a"], generation=0)
    await asyncio.wait_for(store.called.wait(), 5)
    loader.start(["b"], generation=0)  # the next batch came first: a's load is dropped
    await asyncio.sleep(0)
    store.gate.set()
    loaded = await loader.load(["b"], generation=0)
    assert loaded.site_ids == {"b"}
    assert store.finished == [["b"]]


def test_partition_of_picks_what_the_producers_partitioner_picks() -> None:
    keys = [f"villa-{i}".encode() for i in range(200)]
    for count in (1, 4, 12):
        expected = [DefaultPartitioner()(key, list(range(count)), list(range(count))) for key in keys]
        assert [partition_of(key, count) for key in keys] == expected


async def test_sites_of_partitions_moved_away_are_forgotten_the_others_kept() -> None:
    settings = TelemetrySettings(kafka_bootstrap="127.0.0.1:9", redis_url="redis://127.0.0.1:9/0")
    service = build_service("telemetry", settings, consumes=(topics.SITES_TELEMETRY,), produces=())
    pipeline = TelemetryPipeline(service, settings)
    sites = [f"villa-{i}" for i in range(40)]
    at = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)
    for meter, site_id in enumerate(sites):
        reading = villa_reading(site_id, at, float(meter))
        pipeline.last[site_id] = advance(None, reading)
        pipeline.agg.add(site_id, sample_of(reading))
        pipeline.received[site_id] = at.timestamp()
    kept = {s for s in sites if partition_of(s.encode(), 4) in {0, 2}}
    assert 0 < len(kept) < len(sites)

    await pipeline.on_assigned({0, 2}, 4)

    assert set(pipeline.last) == kept
    assert set(pipeline.agg.sites) == kept
    assert set(pipeline.received) == kept


class _Timings:
    """Stands in for LiveStateStore: Redis holds the given protection times of every site asked for."""

    def __init__(self, minutes: tuple[int, int]) -> None:
        self.minutes = minutes

    async def load_sites(self, site_ids: Sequence[str]) -> LoadedSites:
        return LoadedSites(site_ids=set(site_ids), timings=dict.fromkeys(site_ids, self.minutes))


async def test_a_heard_registry_change_outranks_the_older_times_a_load_returns() -> None:
    settings = TelemetrySettings(kafka_bootstrap="127.0.0.1:9", redis_url="redis://127.0.0.1:9/0")
    service = build_service("telemetry", settings, consumes=(topics.SITES_TELEMETRY,), produces=())
    pipeline = TelemetryPipeline(service, settings)
    pipeline.loader = SiteLoader(_Timings((15, 15)))  # type: ignore[arg-type]  # the group's write is late
    pipeline.hear(registered_villa("heard", 20, 25))  # e.g. from the registry tail: another replica's change
    pipeline.hear(registered_villa("gone", 20, 25).model_copy(update={"deleted": True}))

    await pipeline._warm(["heard", "gone", "unheard"])

    assert pipeline.timings["heard"] == Timing(timedelta(minutes=20), timedelta(minutes=25))
    assert "gone" not in pipeline.timings  # the settings' default applies again
    assert pipeline.timings["unheard"] == Timing(timedelta(minutes=15), timedelta(minutes=15))


async def test_the_registry_tail_feeds_what_it_brings_to_the_live_state_times() -> None:
    settings = TelemetrySettings(kafka_bootstrap="127.0.0.1:9", redis_url="redis://127.0.0.1:9/0")
    service = build_service("telemetry", settings, consumes=(topics.SITES_TELEMETRY,), produces=())
    pipeline = TelemetryPipeline(service, settings)

    class _Tail:
        async def start(self) -> None:
            pass

        async def changes(self) -> AsyncIterator[SiteMasterDataChanged]:
            yield registered_villa("villa-1", 30, 40)

    await pipeline.follow_registry(_Tail())  # type: ignore[arg-type]

    assert pipeline.following.is_set()
    assert pipeline.timings["villa-1"] == Timing(timedelta(minutes=30), timedelta(minutes=40))
    assert pipeline.heard == {"villa-1"}
