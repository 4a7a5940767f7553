"""At-least-once consumption on the real broker: retries redeliver, poison messages are parked."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from faststream.kafka import KafkaBroker

from hybridpool_shared import messaging, topics
from hybridpool_shared.messages import FrequencyMeasured
from hybridpool_shared.messaging import Consumer, Delivery, publish
from hybridpool_shared.metrics import ServiceMetrics
from tests.infra import Infra, unique, wait_for_records

pytestmark = pytest.mark.integration


def _sample(hz: float) -> FrequencyMeasured:
    return FrequencyMeasured(
        area="DK2", measured_at=datetime.now(UTC) + timedelta(days=3650), frequency_hz=hz
    )


async def test_transient_failure_is_redelivered_and_poison_is_parked(
    infra: Infra, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(messaging, "BACKOFF_BASE_S", 0.01)
    attempts: Counter[float] = Counter()
    done: asyncio.Queue[float] = asyncio.Queue()
    flaky, poison, after = 49.91, 49.92, 49.93

    async def handler(sample: FrequencyMeasured, _: Delivery) -> None:
        if sample.measured_at < datetime.now(UTC) + timedelta(days=3000):
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
            await publish(broker, topics.GRID_FREQUENCY, _sample(hz))
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
