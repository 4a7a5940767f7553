"""At-least-once consumption on the real broker: retries redeliver, poison messages are parked."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from faststream.kafka import KafkaBroker

from hybridpool_shared import fastbatch, messaging, topics
from hybridpool_shared.messages import FrequencyMeasured
from hybridpool_shared.messaging import Consumer, DeadLetterSink, Delivery, publish
from hybridpool_shared.metrics import ServiceMetrics
from tests.infra import Infra, unique, wait_for_records

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
