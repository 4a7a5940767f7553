"""A raw aiokafka batch consumer for hot topics, with the shared Consumer's guarantees and none of its
per-message FastStream cost.

Same contract as `messaging.Consumer.subscribe_batch`: each record is parsed strictly with its topic's
model; bad input goes to `<topic>.dlq` as DeadLettered with its reason; offsets are committed only after
the handler returned (at-least-once); a failing batch is retried with back-off from its first record and,
after MAX_ATTEMPTS, handled message by message so only what still fails is parked. FastStream builds a
message object per record and runs its middlewares per batch; on a topic carrying tens of thousands of
records a second that was a third of the service's time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.partitioner import murmur2
from prometheus_client import CollectorRegistry, Histogram
from pydantic import ValidationError

from hybridpool_shared.errors import PermanentError
from hybridpool_shared.messages import Message
from hybridpool_shared.messaging import (
    BACKOFF_BASE_S,
    BACKOFF_MAX_S,
    MAX_ATTEMPTS,
    DeadLetterSink,
    parse,
)
from hybridpool_shared.metrics import ServiceMetrics
from hybridpool_shared.topics import TopicSpec

LOGGER = logging.getLogger(__name__)
Record: TypeAlias = "ConsumerRecord[bytes, bytes]"
# A handler takes (message, its consumed record) pairs: the record is where the message came from and
# what a dead-letter entry carries, handed over as it is (a Delivery per record cost a tenth of the
# parsing). It does its work and returns None, or returns the unfinished rest of it (the "finish", e.g.
# I/O whose result the commit must wait for) so the next batch can be prepared meanwhile.
BatchHandler = Callable[[list[tuple[Any, Record]]], Awaitable[Awaitable[None] | None]]
# Told, after each rebalance, the partitions this consumer now has and how many the topic has.
AssignedHandler = Callable[[set[int], int], Awaitable[None]]
BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_HISTOGRAMS: weakref.WeakKeyDictionary[CollectorRegistry, Histogram] = weakref.WeakKeyDictionary()


def batch_histogram(registry: CollectorRegistry) -> Histogram:
    """Return the registry's histogram of batch handling time (one per registry)."""
    if registry not in _HISTOGRAMS:
        _HISTOGRAMS[registry] = Histogram(
            "hybridpool_batch_duration_seconds",
            "Time from a batch's records consumed to their offsets committable (parse + handler).",
            ["topic"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
    return _HISTOGRAMS[registry]


@dataclass
class _InFlight:
    """A batch whose handler returned but whose finish may still run; committed once it succeeded."""

    records: list[Record]
    parsed: list[tuple[Message, Record]]
    finish: Awaitable[None] | None
    started: float
    failed: bool = False


def partition_of(key: bytes, partitions: int) -> int:
    """Return the partition a keyed record goes to, as the default partitioner (murmur2) picks it."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


class _Rebalances(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    """Settles the batches in flight before partitions move; passes each new assignment on."""

    def __init__(self, batches: BatchConsumer, on_assigned: AssignedHandler | None) -> None:
        self.batches = batches
        self.on_assigned = on_assigned

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        """Finish and commit what is in flight: the next owner starts after it, on the state it wrote.

        aiokafka waits for this before rejoining and keeps the member alive meanwhile.
        """
        if revoked:  # empty when joining for the first time
            await self.batches.settle_for_rebalance()

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """Tell the handler which partitions are now this consumer's."""
        if self.on_assigned is None:
            return
        topic = self.batches.spec.name
        count = len(self.batches.consumer.partitions_for_topic(topic) or ())
        await self.on_assigned({tp.partition for tp in assigned if tp.topic == topic}, count)


def _done(finish: Awaitable[None]) -> bool:
    return isinstance(finish, asyncio.Future) and finish.done()


async def _quietly(finish: Awaitable[None] | None) -> None:
    """Wait for a finish whose failure is already being dealt with."""
    if finish is not None:
        with contextlib.suppress(Exception):
            await finish


async def _let_io_start() -> None:
    """Yield a few loop turns, so requests a prefetch started are sent before the CPU-bound parse.

    A task's first step runs only when the loop gets control, and a Redis client takes two turns (task,
    connection) before its request is written; unsent, the request would overlap nothing.
    """
    for _ in range(3):
        await asyncio.sleep(0)


class BatchConsumer:
    """Consumes one topic in batches with a plain AIOKafkaConsumer; run() until cancelled.

    While batch N's finish runs (see BatchHandler), later batches are fetched, parsed and handed to
    the handler, up to max_in_flight unfinished; batches are committed in order, each only once its
    finish succeeded. If a finish or a handler fails, that batch and every later one are handled
    again one after the other without overlap (retries, then message by message), so the handler
    must make a failed finish fail every later one it overlapped with. Before a rebalance takes
    partitions away, every batch in flight is finished and committed, so the next owner neither
    handles them again nor sees their finish land after its own writes.
    """

    def __init__(
        self,
        spec: TopicSpec,
        handler: BatchHandler,
        *,
        bootstrap: str,
        group_id: str,
        sink: DeadLetterSink,
        metrics: ServiceMetrics,
        max_records: int = 4000,
        fetch_max_wait_ms: int = 100,
        max_in_flight: int = 1,
        prefetch: Callable[[list[Record]], None] | None = None,
        on_assigned: AssignedHandler | None = None,
    ) -> None:
        self.spec = spec
        self.handler = handler
        self.sink = sink
        self.metrics = metrics
        self.max_records = max_records
        self.max_in_flight = max_in_flight
        self.prefetch = prefetch  # told of each fetched batch before it is parsed, to start its I/O early
        self.batch_seconds = batch_histogram(metrics.registry).labels(topic=spec.name)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group_id,
            client_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=fetch_max_wait_ms,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        self.consumer.subscribe([spec.name], listener=_Rebalances(self, on_assigned))
        self.started = asyncio.Event()
        self.inflight: deque[_InFlight] = deque()
        self._settling = asyncio.Lock()  # one settler at a time: the loop, or a revocation
        self._between_batches = asyncio.Event()  # clear from records fetched to their batch in flight
        self._between_batches.set()
        self.settling_for_rebalance = asyncio.Event()  # set while in-flight batches settle for one

    async def run(self) -> None:
        """Join the group and handle batches until cancelled; leave the group on the way out."""
        inflight = self.inflight
        try:
            await self.consumer.start()
            self.started.set()
            while True:
                records = await self._fetch(100 if inflight else 1000)
                if records:
                    self._between_batches.clear()
                    try:
                        if self.prefetch is not None:
                            self.prefetch(records)
                            await _let_io_start()
                        inflight.append(await self._start(records))
                    finally:
                        self._between_batches.set()
                await self._settle_ready(inflight, drain=not records)
        finally:
            for batch in inflight:  # not committed: redelivered to whoever consumes next
                if isinstance(batch.finish, asyncio.Future):
                    batch.finish.cancel()
            await self.consumer.stop()

    async def settle_for_rebalance(self) -> None:
        """Finish and commit every batch in flight, including one being started now.

        During a rebalance aiokafka holds the loop's wait for records until the new assignment, so
        what is in flight then would otherwise wait for the rebalance and miss its commit.
        """
        self.settling_for_rebalance.set()
        started, batches = time.perf_counter(), len(self.inflight)
        try:
            while True:
                await self._between_batches.wait()
                await self._settle_ready(self.inflight, drain=True)
                if self._between_batches.is_set() and not self.inflight:
                    break
        finally:
            self.settling_for_rebalance.clear()
        LOGGER.info(
            "rebalance of %s: settled %s batches in flight in %.3f s before giving partitions up",
            self.spec.name,
            batches,
            time.perf_counter() - started,
        )

    async def _start(self, records: list[Record]) -> _InFlight:
        """Parse a batch and run its handler, leaving its finish running."""
        batch = _InFlight(records, await self._parse(records), None, time.perf_counter())
        if batch.parsed:
            try:
                batch.finish = await self.handler(batch.parsed)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                LOGGER.warning("a batch of %s failed; handling it again: %r", self.spec.name, exc)
                batch.failed = True
        return batch

    async def _settle_ready(self, inflight: deque[_InFlight], *, drain: bool) -> None:
        """Commit finished batches oldest first; wait for the oldest while too many are in flight.

        A failure redoes the failed batch and every later one, in order and without overlap.
        """
        async with self._settling:
            await self._settle_oldest(inflight, drain=drain)

    async def _settle_oldest(self, inflight: deque[_InFlight], *, drain: bool) -> None:
        """_settle_ready's work, by whoever holds the settling lock."""
        while inflight:
            oldest = inflight[0]
            must_wait = drain or len(inflight) > self.max_in_flight or inflight[-1].failed
            if not (must_wait or oldest.finish is None or _done(oldest.finish)):
                return
            inflight.popleft()
            if oldest.failed or not await self._settle(oldest):
                redo = [oldest, *inflight]
                inflight.clear()
                for batch in redo:
                    await _quietly(batch.finish)
                for batch in redo:
                    await self.handle(batch.records, batch.parsed)
                return

    async def _settle(self, inflight: _InFlight) -> bool:
        """Wait for a batch's finish and commit it; False (nothing committed) if the finish failed."""
        try:
            if inflight.finish is not None:
                await inflight.finish
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            LOGGER.warning("finishing a batch of %s failed; handling it again: %r", self.spec.name, exc)
            return False
        self.metrics.processed.labels(topic=self.spec.name).inc(len(inflight.parsed))
        self.batch_seconds.observe(time.perf_counter() - inflight.started)
        await self._commit(inflight.records)
        return True

    async def _fetch(self, timeout_ms: int) -> list[Record]:
        """Return up to max_records: what the fetcher holds, topped up while more is already there.

        One getmany returns what a single fetch response brought (often a hundred records); a batch
        of thousands spreads each batch's fixed costs (one Redis call, one commit) much thinner.
        """
        fetched = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=self.max_records)
        records = [r for part in fetched.values() for r in part]
        while records and len(records) < self.max_records:
            more = await self.consumer.getmany(timeout_ms=0, max_records=self.max_records - len(records))
            if not more:
                break
            records += [r for part in more.values() for r in part]
        return records

    async def handle(self, records: list[Record], parsed: list[tuple[Message, Record]] | None = None) -> None:
        """Handle one batch to the end without overlap (retries included), then commit its offsets."""
        started = time.perf_counter()
        if parsed is None:
            parsed = await self._parse(records)
        attempt = 0
        while parsed:
            try:
                await self._whole(parsed)
                self.metrics.processed.labels(topic=self.spec.name).inc(len(parsed))
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                attempt += 1
                if attempt >= MAX_ATTEMPTS:
                    await self._one_by_one(parsed)
                    break
                await self._back_off(attempt, exc)
        self.batch_seconds.observe(time.perf_counter() - started)
        await self._commit(records)

    async def _whole(self, parsed: list[tuple[Message, Record]]) -> None:
        """Run the handler and its finish."""
        finish = await self.handler(parsed)
        if finish is not None:
            await finish

    async def _parse(self, records: list[Record]) -> list[tuple[Message, Record]]:
        """Parse every record strictly; bad ones are parked with their reason and left out."""
        validate = self.spec.model.__pydantic_validator__.validate_json
        try:  # the usual case, all good: the model's validator without per-record wrappers
            return [(validate(record.value), record) for record in records]
        except (ValidationError, TypeError):  # TypeError: a tombstone (None); sort them out one by one
            pass
        parsed: list[tuple[Message, Record]] = []
        for record in records:
            try:
                parsed.append((parse(self.spec, record), record))
            except PermanentError as exc:
                await self.sink.park(record, exc.kind, exc.reason)
        return parsed

    async def _one_by_one(self, parsed: list[tuple[Message, Record]]) -> None:
        """Isolate what keeps failing a batch: each message alone, parking only those that still fail."""
        for message, record in parsed:
            try:
                await self._whole([(message, record)])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self.sink.park(record, "retries_exhausted", f"{type(exc).__name__}: {exc}")
                continue
            self.metrics.processed.labels(topic=self.spec.name).inc()

    async def _back_off(self, attempt: int, exc: Exception) -> None:
        self.metrics.retries.labels(topic=self.spec.name).inc()
        LOGGER.warning("transient failure on %s (attempt %s): %r", self.spec.name, attempt, exc)
        await asyncio.sleep(min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempt))

    async def _commit(self, records: list[Record]) -> None:
        """Commit past the batch; if the partitions moved to another member, it redelivers them."""
        last: dict[tuple[str, int], int] = {}
        for r in records:  # a plain tuple per record: a TopicPartition each cost more than the commit
            last[r.topic, r.partition] = r.offset
        offsets = {
            TopicPartition(topic, partition): offset + 1 for (topic, partition), offset in last.items()
        }
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError, KafkaError) as exc:
            LOGGER.warning(
                "commit of %s records on %s failed (redelivered): %r", len(records), self.spec.name, exc
            )
