"""Consuming with at-least-once delivery and a dead-letter topic; publishing keyed messages."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from aiokafka import ConsumerRecord
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from pydantic import ValidationError

from hybridpool_shared.errors import PermanentError
from hybridpool_shared.messages import DeadLettered, Message
from hybridpool_shared.metrics import ServiceMetrics
from hybridpool_shared.timeutil import utc_now
from hybridpool_shared.topics import TopicSpec

LOGGER = logging.getLogger(__name__)
M = TypeVar("M", bound=Message)
MAX_ATTEMPTS = 5
BACKOFF_BASE_S = 0.2
BACKOFF_MAX_S = 5.0


@dataclass(frozen=True)
class Delivery:
    """Where a consumed message came from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    timestamp_ms: int


async def publish(broker: KafkaBroker, spec: TopicSpec, message: Message) -> None:
    """Publish a model on its topic, keyed, and wait for the broker to confirm."""
    if not isinstance(message, spec.model):
        raise TypeError(f"{spec.name} carries {spec.model.__name__}, not {type(message).__name__}")
    await broker.publish(
        message.to_json_bytes(),
        spec.name,
        key=message.kafka_key(),
        headers={"content-type": "application/json", "message-type": type(message).__name__},
    )


def _record(raw: Any) -> ConsumerRecord[bytes, bytes]:
    if not isinstance(raw, ConsumerRecord):
        raise TypeError(f"expected a ConsumerRecord, got {type(raw).__name__}")
    return raw


class DeadLetterSink:
    """Parks messages that cannot be processed on `<topic>.dlq` and counts them."""

    def __init__(self, broker: KafkaBroker, metrics: ServiceMetrics, group_id: str) -> None:
        self.broker = broker
        self.metrics = metrics
        self.group_id = group_id

    async def park(self, record: ConsumerRecord[bytes, bytes], kind: str, error: str) -> None:
        """Publish the record with its reason to the dead-letter topic, then count it."""
        value = record.value or b""
        letter = DeadLettered(
            source_topic=record.topic,
            source_partition=record.partition,
            source_offset=record.offset,
            source_key_b64=base64.b64encode(record.key).decode() if record.key else None,
            consumer_group=f"{self.group_id}.{record.topic}",
            error_kind=kind,
            error=error[:8000],
            payload_b64=base64.b64encode(value).decode(),
            payload_text=_as_text(value),
            dead_lettered_at=utc_now(),
        )
        await self.broker.publish(letter.to_json_bytes(), record.topic + ".dlq", key=record.key)
        self.metrics.dead_letters.labels(topic=record.topic, reason=kind).inc()
        LOGGER.warning(
            "dead-lettered %s[%s]@%s: %s: %s",
            record.topic,
            record.partition,
            record.offset,
            kind,
            error[:300],
        )


def _as_text(value: bytes) -> str | None:
    try:
        return value.decode()
    except UnicodeDecodeError:
        return None


def parse(spec: TopicSpec, record: ConsumerRecord[bytes, bytes]) -> Message:
    """Validate a record's payload against its topic's model or raise PermanentError."""
    if record.value is None:
        raise PermanentError("tombstone", "empty payload (tombstone) where a message was expected")
    try:
        return spec.model.from_json_bytes(record.value)
    except ValidationError as exc:
        raise PermanentError("validation", _short_errors(exc)) from exc


def _short_errors(exc: ValidationError) -> str:
    parts = [f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors()]
    return f"{exc.title}: " + "; ".join(parts)


class _Attempts:
    """Counts transient failures per record so a message that never succeeds is parked."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, int, int], int] = {}

    def failed(self, record: ConsumerRecord[bytes, bytes]) -> int:
        key = (record.topic, record.partition, record.offset)
        self._counts[key] = self._counts.get(key, 0) + 1
        return self._counts[key]

    def count(self, record: ConsumerRecord[bytes, bytes]) -> int:
        return self._counts.get((record.topic, record.partition, record.offset), 0)

    def done(self, record: ConsumerRecord[bytes, bytes]) -> None:
        self._counts.pop((record.topic, record.partition, record.offset), None)


Handler = Callable[[M, Delivery], Awaitable[None]]
BatchHandler = Callable[[list[tuple[M, Delivery]]], Awaitable[None]]


def _delivery(record: ConsumerRecord[bytes, bytes]) -> Delivery:
    return Delivery(record.topic, record.partition, record.offset, record.key, record.timestamp)


async def _undecoded(msg: Any) -> Any:
    """Skip FastStream's JSON decoding: handlers parse the raw record with the topic's strict model."""
    return msg.body


class Consumer:
    """Subscribes handlers to topics: parse strictly, dead-letter bad input, retry transient errors."""

    def __init__(self, broker: KafkaBroker, metrics: ServiceMetrics, group_id: str) -> None:
        self.broker = broker
        self.metrics = metrics
        self.group_id = group_id
        self.sink = DeadLetterSink(broker, metrics, group_id)
        self._attempts = _Attempts()

    def group_for(self, spec: TopicSpec) -> str:
        """Return the consumer group of this service on one topic (one group per topic)."""
        return f"{self.group_id}.{spec.name}"

    def subscribe(self, spec: TopicSpec, handler: Handler[Any]) -> None:
        """Call handler for every valid message on spec's topic; commit only after it returns."""

        @self.broker.subscriber(
            spec.name,
            group_id=self.group_for(spec),
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.NACK_ON_ERROR,
            decoder=_undecoded,
            title=f"{self.group_id}:{spec.name}",
            description=spec.description,
        )
        async def _on_message(msg: KafkaMessage) -> None:
            record = _record(msg.raw_message)
            await self._handle_one(spec, record, handler)

    def subscribe_batch(
        self,
        spec: TopicSpec,
        handler: BatchHandler[Any],
        *,
        max_records: int = 500,
        fetch_max_wait_ms: int = 100,
    ) -> None:
        """Call handler with batches of valid messages; bad ones are dead-lettered first.

        fetch_max_wait_ms bounds how long the broker holds a fetch to fill it: latency vs batch size.
        """

        @self.broker.subscriber(
            spec.name,
            group_id=self.group_for(spec),
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.NACK_ON_ERROR,
            batch=True,
            max_records=max_records,
            fetch_max_wait_ms=fetch_max_wait_ms,
            decoder=_undecoded,
            title=f"{self.group_id}:{spec.name}",
            description=spec.description,
        )
        async def _on_batch(msg: KafkaMessage) -> None:
            records: Sequence[Any] = msg.raw_message
            await self._handle_batch(spec, [_record(r) for r in records], handler)

    async def _handle_one(
        self, spec: TopicSpec, record: ConsumerRecord[bytes, bytes], handler: Handler[Any]
    ) -> None:
        try:
            await handler(parse(spec, record), _delivery(record))
        except PermanentError as exc:
            await self.sink.park(record, exc.kind, exc.reason)
        except Exception as exc:
            await self._retry_or_park(record, exc)
            return
        self._attempts.done(record)
        self.metrics.processed.labels(topic=spec.name).inc()

    async def _handle_batch(
        self,
        spec: TopicSpec,
        records: list[ConsumerRecord[bytes, bytes]],
        handler: BatchHandler[Any],
    ) -> None:
        parsed: list[tuple[ConsumerRecord[bytes, bytes], Message]] = []
        for record in records:
            try:
                parsed.append((record, parse(spec, record)))
            except PermanentError as exc:
                await self.sink.park(record, exc.kind, exc.reason)
        if not parsed:
            return
        try:
            await handler([(message, _delivery(record)) for record, message in parsed])
        except Exception as exc:
            if self._attempts.failed(records[0]) < MAX_ATTEMPTS:
                await self._back_off(records[0], exc)
            self._attempts.done(records[0])
            await self._handle_one_by_one(spec, parsed, handler)
            return
        self._attempts.done(records[0])
        self.metrics.processed.labels(topic=spec.name).inc(len(parsed))

    async def _handle_one_by_one(
        self,
        spec: TopicSpec,
        parsed: list[tuple[ConsumerRecord[bytes, bytes], Message]],
        handler: BatchHandler[Any],
    ) -> None:
        """Isolate what keeps failing a batch: each message alone, parking only those that still fail."""
        for record, message in parsed:
            try:
                await handler([(message, _delivery(record))])
            except Exception as exc:
                await self.sink.park(record, "retries_exhausted", _describe(exc))
                continue
            self.metrics.processed.labels(topic=spec.name).inc()

    async def _retry_or_park(self, record: ConsumerRecord[bytes, bytes], exc: Exception) -> None:
        if self._attempts.failed(record) >= MAX_ATTEMPTS:
            self._attempts.done(record)
            await self.sink.park(record, "retries_exhausted", _describe(exc))
            return
        await self._back_off(record, exc)

    async def _back_off(self, record: ConsumerRecord[bytes, bytes], exc: Exception) -> None:
        """Wait, then raise so the broker redelivers from this record on (nothing is committed)."""
        attempts = self._attempts.count(record)
        self.metrics.retries.labels(topic=record.topic).inc()
        LOGGER.warning("transient failure on %s (attempt %s): %r", record.topic, attempts, exc)
        await asyncio.sleep(min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempts))
        raise exc


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"
