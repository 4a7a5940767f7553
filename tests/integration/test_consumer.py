"""At-least-once consumption on the real broker: retries redeliver, poison messages are parked."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from faststream.kafka import KafkaBroker

from hybridpool_shared import fastbatch, messaging, topics
from hybridpool_shared.messages import FrequencyMeasured, TelemetryReported
from hybridpool_shared.messaging import Consumer, DeadLetterSink, Delivery, publish
from hybridpool_shared.metrics import ServiceMetrics
from tests.infra import Infra, produce, unique, villa_reading, wait_for_records

pytestmark = pytest.mark.integration


def _sample(hz: float, years_ahead: int) -> FrequencyMeasured:
    """A sample dated years ahead: each test picks its own year, so it can tell its records on the topic."""
    at = datetime.now(UTC) + timedelta(days=365 * years_ahead)
    return FrequencyMeasured(area="DK2", measured_at=at, frequency_hz=hz)


def _ours(sample: FrequencyMeasured, years_ahead: int) -> bool:
    return abs((sample.measured_at - datetime.now(UTC)).days - 365 * years_ahead) < 100


async def test_transient_failure_is_redelivered_and_poison_is_parked(
    infra: Infra, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(messaging, "BACKOFF_BASE_S", 0.01)
    attempts: Counter[float] = Counter()
    done: asyncio.Queue[float] = asyncio.Queue()
    flaky, poison, after = 49.91, 49.92, 49.93

    async def handler(sample: FrequencyMeasured, _: Delivery) -> None:
        if not _ours(sample, 10):
            return  # records of other tests on the shared topic
        attempts[sample.frequency_hz] += 1
        if sample.frequency_hz == poison or (sample.frequency_hz == flaky and attempts[flaky] < 3):
            raise ConnectionError("redis away")
        await done.put(sample.frequency_hz)

    broker = KafkaBroker(infra.kafka_bootstrap)
    metrics = ServiceMetrics("test")
    Consumer(broker, metrics, group_id=unique("hybridpool.test")).subscribe(topics.GRID_FREQUENCY, handler)
    await broker.start()
    try:
        for hz in (flaky, poison, after):
            await publish(broker, topics.GRID_FREQUENCY, _sample(hz, 10))
        handled = [await asyncio.wait_for(done.get(), 60) for _ in range(2)]
    finally:
        await broker.stop()

    assert handled == [flaky, after]  # order kept on the single partition; nothing skipped
    assert attempts[flaky] == 3
    assert attempts[poison] == messaging.MAX_ATTEMPTS
    parked = await wait_for_records(
        infra.kafka_bootstrap,
        topics.GRID_FREQUENCY.dlq,
        lambda r: (
            json.loads(r.value)["error_kind"] == "retries_exhausted"
            and str(poison) in json.loads(r.value)["payload_text"]
        ),
    )
    assert "ConnectionError: redis away" in json.loads(parked[0].value)["error"]


async def test_a_batch_that_keeps_failing_parks_only_its_poison_and_handles_the_rest(
    infra: Infra, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(messaging, "BACKOFF_BASE_S", 0.01)
    before, poison, after = [49.81, 49.82], 49.83, [49.84, 49.85]
    calls_with_poison = 0
    handled: set[float] = set()
    all_handled = asyncio.Event()

    async def handler(batch: list[tuple[FrequencyMeasured, Delivery]]) -> None:
        nonlocal calls_with_poison
        ours = [s.frequency_hz for s, _ in batch if _ours(s, 20)]
        if poison in ours:
            calls_with_poison += 1
            raise ConnectionError("always fails with this one")
        handled.update(ours)
        if handled >= {*before, *after}:
            all_handled.set()

    async with KafkaBroker(infra.kafka_bootstrap) as producer:
        for hz in (*before, poison, *after):  # published before the consumer starts: one batch
            await publish(producer, topics.GRID_FREQUENCY, _sample(hz, 20))
    broker = KafkaBroker(infra.kafka_bootstrap)
    Consumer(broker, ServiceMetrics("test"), group_id=unique("hybridpool.test")).subscribe_batch(
        topics.GRID_FREQUENCY, handler
    )
    await broker.start()
    try:
        await asyncio.wait_for(all_handled.wait(), 60)
    finally:
        await broker.stop()

    assert handled == {*before, *after}
    assert calls_with_poison == messaging.MAX_ATTEMPTS + 1  # five as a batch, once alone
    parked = await wait_for_records(
        infra.kafka_bootstrap,
        topics.GRID_FREQUENCY.dlq,
        lambda r: (
            json.loads(r.value)["error_kind"] == "retries_exhausted"
            and "always fails" in json.loads(r.value)["error"]
        ),
    )
    assert [str(poison) in json.loads(r.value)["payload_text"] for r in parked] == [True]


async def test_the_batch_consumer_tells_its_assignment_after_joining(infra: Infra) -> None:
    assignments: asyncio.Queue[tuple[set[int], int]] = asyncio.Queue()

    async def on_assigned(partitions: set[int], count: int) -> None:
        await assignments.put((partitions, count))

    async def handler(items: list[tuple[object, fastbatch.Record]]) -> None:
        return None

    metrics = ServiceMetrics("test")
    batches = fastbatch.BatchConsumer(
        topics.SITES_TELEMETRY,
        handler,
        bootstrap=infra.kafka_bootstrap,
        group_id=unique("assigned"),
        sink=DeadLetterSink(KafkaBroker(infra.kafka_bootstrap), metrics, "test"),
        metrics=metrics,
        on_assigned=on_assigned,
    )
    running = asyncio.create_task(batches.run())
    try:
        partitions, count = await asyncio.wait_for(assignments.get(), 60)
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
    assert count == topics.SITES_TELEMETRY.partitions
    assert partitions == set(range(count))  # the group's only member has them all


class _Member:
    """A BatchConsumer of sites.telemetry in one group; passes the test's readings it handles on."""

    def __init__(self, infra: Infra, group: str, prefix: str, handled: asyncio.Queue[_Handled]) -> None:
        self.prefix = prefix
        self.handled = handled
        self.finish_after: asyncio.Event | None = None  # each batch's finish waits for it (None: none)
        self.assigned: asyncio.Queue[set[int]] = asyncio.Queue()
        self.saw: defaultdict[float, asyncio.Event] = defaultdict(asyncio.Event)  # by meter reading
        metrics = ServiceMetrics("test")
        self.batches = fastbatch.BatchConsumer(
            topics.SITES_TELEMETRY,
            self.handler,
            bootstrap=infra.kafka_bootstrap,
            group_id=group,
            sink=DeadLetterSink(KafkaBroker(infra.kafka_bootstrap), metrics, "test"),
            metrics=metrics,
            on_assigned=self.on_assigned,
        )

    async def handler(
        self, items: list[tuple[TelemetryReported, fastbatch.Record]]
    ) -> asyncio.Task[bool] | None:
        for message, _ in items:
            if message.site_id.startswith(self.prefix):
                self.handled.put_nowait(_Handled(self, message.site_id, message.meter_reading_kwh))
                self.saw[message.meter_reading_kwh].set()
        return None if self.finish_after is None else asyncio.create_task(self.finish_after.wait())

    async def on_assigned(self, partitions: set[int], count: int) -> None:
        await self.assigned.put(partitions)


@dataclass(frozen=True)
class _Handled:
    member: _Member
    site_id: str
    meter_kwh: float


async def _publish_round(infra: Infra, site_ids: list[str], meter_kwh: float) -> None:
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10) + timedelta(seconds=meter_kwh)
    for site_id in site_ids:
        reading = villa_reading(site_id, at, meter_kwh)
        await produce(
            infra.kafka_bootstrap, topics.SITES_TELEMETRY.name, reading.to_json_bytes(), reading.kafka_key()
        )


async def _take_round(
    handled: asyncio.Queue[_Handled], site_ids: list[str], meter_kwh: float
) -> list[_Handled]:
    """Take what was handled until every site's reading of the round was (and what else came first)."""
    taken, missing = [], set(site_ids)
    while missing:
        taken.append(await asyncio.wait_for(handled.get(), 60))
        if taken[-1].meter_kwh == meter_kwh:
            missing.discard(taken[-1].site_id)
    return taken


async def _first_of(*events: asyncio.Event) -> None:
    waits = [asyncio.create_task(event.wait()) for event in events]
    try:
        await asyncio.wait_for(asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED), 60)
    finally:
        for wait in waits:
            wait.cancel()


async def test_batches_in_flight_are_finished_and_committed_before_their_partitions_move(
    infra: Infra,
) -> None:
    prefix, group = unique("revoke"), unique("revoke")
    site_ids = [f"{prefix}-{n}" for n in range(24)]  # spread over the topic's 12 partitions
    handled: asyncio.Queue[_Handled] = asyncio.Queue()
    first, second = _Member(infra, group, prefix, handled), _Member(infra, group, prefix, handled)
    first.finish_after = released = asyncio.Event()
    await _publish_round(infra, site_ids, 1.0)
    tasks = [asyncio.create_task(first.batches.run())]
    try:
        seen = await _take_round(handled, site_ids, 1.0)  # handled by the first member, none finished yet
        tasks.append(asyncio.create_task(second.batches.run()))
        # The second member joining makes the first one give partitions up. Its finishes end when it
        # settles them for that (or, if it did not, once the second member has redone them).
        await _first_of(first.batches.settling_for_rebalance, second.saw[1.0])
        released.set()
        assert await asyncio.wait_for(second.assigned.get(), 60), "the second member got no partition"
        await _publish_round(infra, site_ids, 2.0)
        seen += await _take_round(handled, site_ids, 2.0)
        while not handled.empty():
            seen.append(handled.get_nowait())
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    every = Counter((h.site_id, h.meter_kwh) for h in seen)
    assert [h for h in seen if every[h.site_id, h.meter_kwh] > 1] == []  # nothing handled twice
    assert {h.member for h in seen if h.meter_kwh == 2.0} == {first, second}
