"""The telemetry use cases: take a batch of readings to live state and quarters; sweep for silence."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Gauge

from hybridpool_shared import topics
from hybridpool_shared.fastbatch import BatchConsumer, Record, batch_histogram, partition_of
from hybridpool_shared.messages import SiteMasterDataChanged, TelemetryReported
from hybridpool_shared.messaging import Delivery
from hybridpool_shared.runtime import Service
from hybridpool_shared.sitestate import GatewayStatus, SiteLiveState
from hybridpool_shared.timeutil import utc_now
from services.telemetry.adapters import LiveStateStore, LoadedSites, QuarterProducer, RegistryTail
from services.telemetry.domain.quarters import (
    ClosedQuarter,
    MeterOrderError,
    QuarterAggregator,
    Sample,
    sample_lines,
    sample_of,
)
from services.telemetry.domain.state import Last, Timing, advance, last_of, state_json
from services.telemetry.domain.validation import InvalidReading, Limits, Order, check_reading
from services.telemetry.loading import SiteLoader
from services.telemetry.metrics import BatchHistogram
from services.telemetry.settings import TelemetrySettings

LOGGER = logging.getLogger(__name__)
# Readings checked between event-loop turns: a batch of 4,000 is ~100 ms of CPU, during which the
# replies the earlier batches' finishes wait for (broker acks, Redis writes) would sit unread.
YIELD_EVERY = 1000
ADOPT_LIMIT = 200_000  # silent sites read per sweep
LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)


@dataclass
class _Taken:
    """What checking a batch's readings found, gathered slice by slice."""

    received_s: float
    newest: dict[str, tuple[TelemetryReported, Last]] = field(default_factory=dict)
    added: dict[str, list[Sample]] = field(default_factory=dict)
    counts: dict[Order, int] = field(default_factory=lambda: dict.fromkeys(Order, 0))
    refused: list[tuple[Record, str, str]] = field(default_factory=list)


@dataclass
class _Work:
    """What finishing a batch (or a sweep) has to do, prepared in memory."""

    closed: list[ClosedQuarter]
    docs: dict[str, bytes]
    seen_s: float
    quarters: dict[str, bytes]
    measured_s: list[float] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


class TelemetryPipeline:
    """Checks readings, keeps live state and open quarters in Redis, publishes quarters, watches freshness.

    Per batch: readings are checked and aggregated in memory, the quarters they closed are published and
    acknowledged by the broker, then live states and open quarters are written to Redis in one script
    call, then the offsets are committed. A crash anywhere redelivers the batch onto the state Redis
    holds, so a quarter is published at least once and never lost, and a restart resumes open quarters.
    """

    def __init__(self, service: Service, settings: TelemetrySettings) -> None:
        self.service = service
        self.settings = settings
        self.store = LiveStateStore(service.redis)
        self.loader = SiteLoader(self.store)
        self.agg = QuarterAggregator(settings.max_gap_s, settings.close_grace_s)
        self.limits = Limits(settings.max_future_s, settings.max_age_h, settings.max_implied_kw)
        self.timing = Timing.of_minutes(settings.min_run_minutes, settings.lockout_minutes)
        self.received: dict[str, float] = {}
        self.timings: dict[str, Timing] = {}  # per site from sites.registry; else the settings' default
        # Sites whose registry change this process heard since its tail took position: what it holds of
        # them is newer than what a load from Redis returns (the group's writer may not have written yet).
        self.heard: set[str] = set()
        self.following = asyncio.Event()  # the registry tail has taken position: later changes are heard
        self.last: dict[str, Last] = {}  # this process's sites: it is their only writer (keyed partitions)
        self.producer: QuarterProducer | None = None
        self.ready = asyncio.Event()  # the quarter producer is connected
        self._tail: asyncio.Task[None] | None = None  # the latest batch's (or sweep's) finish
        self._sent = asyncio.Event()  # the latest finish has handed its quarters to the producer
        self._sent.set()
        self._epoch = 0  # counts resets: work prepared across one is thrown away
        self._last_sweep = time.time()
        self._in_memory = asyncio.Lock()  # held while a batch or the sweep changes open quarters
        self._owned: tuple[set[int], int] | None = None  # sites.telemetry partitions held, of how many
        self._adopted_to: float | None = None  # silent sites taken over up to this arrival time
        reg = service.metrics.registry
        self.readings = Counter(
            "hybridpool_telemetry_readings_total", "Readings by outcome.", ["outcome"], registry=reg
        )
        self.lag = BatchHistogram(
            "hybridpool_telemetry_lag_seconds",
            "Reading timestamp to live state written in Redis.",
            LAG_BUCKETS,
            reg,
        )
        self.quarters = Counter(
            "hybridpool_telemetry_quarters_total", "Quarter aggregates published.", ["quality"], registry=reg
        )
        self.sites = Gauge("hybridpool_telemetry_sites", "Sites by gateway status.", ["status"], registry=reg)
        batch_histogram(reg).labels(topic=topics.SITES_TELEMETRY.name)  # on /metrics before the first batch

    async def consume_forever(self) -> None:
        """Connect the quarter producer and consume sites.telemetry in batches until cancelled."""
        s = self.settings
        await self.following.wait()  # a site loaded before then could miss a change for good
        self.producer = QuarterProducer(s.resolved_kafka_bootstrap(), s.kafka_idempotence)
        await self.producer.start()
        self.ready.set()
        try:
            while True:
                batches = BatchConsumer(
                    topics.SITES_TELEMETRY,
                    self.on_batch,
                    bootstrap=s.resolved_kafka_bootstrap(),
                    group_id=self.service.consumer.group_for(topics.SITES_TELEMETRY),
                    sink=self.service.consumer.sink,
                    metrics=self.service.metrics,
                    max_records=s.batch_max_records,
                    fetch_max_wait_ms=s.fetch_max_wait_ms,
                    max_in_flight=s.batches_in_flight,
                    prefetch=self.prefetch,
                    on_assigned=self.on_assigned,
                )
                try:
                    await batches.run()
                except Exception:  # e.g. the broker went away: join again with a fresh consumer
                    LOGGER.exception("consuming %s failed; reconnecting", topics.SITES_TELEMETRY.name)
                    await asyncio.sleep(1.0)
        finally:
            await self.producer.stop()

    async def on_batch(self, items: list[tuple[TelemetryReported, Record]]) -> asyncio.Task[None]:
        """Check and aggregate a batch in memory; return the task that finishes it.

        The finish publishes the closed quarters, waits for the broker, then writes states and open
        quarters; it runs after the previous batch's finish and fails if that failed, so the consumer
        can prepare the next batch meanwhile and redo both in order when something went wrong.
        """
        epoch = self._epoch
        site_ids = list(dict.fromkeys(msg.site_id for msg, _ in items))
        try:
            work = await self._prepare(items, site_ids)
            if epoch != self._epoch:  # an earlier batch failed while this one was built on top of it
                raise RuntimeError("an earlier batch failed while this one was prepared")
        except BaseException:
            self._reset()
            raise
        return self._chain(work)

    async def on_assigned(self, partitions: set[int], count: int) -> None:
        """Forget the sites of partitions this process no longer consumes: another replica writes them now.

        Kept, they would be stale if their partition came back, and override what Redis then holds.
        """
        self._owned, self._adopted_to = (partitions, count), None  # new partitions: take their silent sites
        async with self._in_memory:
            held = self.last.keys() | self.agg.sites.keys() | self.received.keys()
            gone = [s for s in held if partition_of(s.encode(), count) not in partitions] if count else []
            for site_id in gone:
                self.last.pop(site_id, None)
                self.agg.sites.pop(site_id, None)
                self.received.pop(site_id, None)
        if gone:
            LOGGER.info(
                "partitions now %s of %s: forgot %s sites of the others", sorted(partitions), count, len(gone)
            )

    def prefetch(self, records: list[Record]) -> None:
        """Start loading the sites of a fetched batch this process has not seen, while it is parsed.

        Records are keyed by site; a key that is not its reading's site only costs a load in _warm.
        """
        keys = dict.fromkeys(r.key for r in records)
        ids = [k.decode(errors="replace") for k in keys if k]
        self.loader.start([s for s in ids if s not in self.last], self._epoch)

    async def _prepare(self, items: list[tuple[TelemetryReported, Record]], site_ids: list[str]) -> _Work:
        async with self._in_memory:  # the sweep changes the same quarters: it waits for whole batches
            await self._warm(site_ids)
            late_before = self.agg.late
            taken = _Taken(time.time())
            for start in range(0, len(items), YIELD_EVERY):
                if start:
                    await asyncio.sleep(0)  # let earlier batches' finishes take their replies
                self._take(items[start : start + YIELD_EVERY], taken)
            closed: list[ClosedQuarter] = []
            for site_id in site_ids:
                if site_id in self.agg.sites:
                    self.agg.close_ready_into(site_id, closed)
            updates = self._quarter_updates(taken.added)
            for refusal in taken.refused:
                await self._park(*refusal)
        received = datetime.fromtimestamp(taken.received_s, tz=UTC)
        docs = {
            sid: state_json(msg, last, received, self.timings.get(sid, self.timing))
            for sid, (msg, last) in taken.newest.items()
        }
        counts_out = {order.value: n for order, n in taken.counts.items()}
        counts_out["late_for_quarter"] = self.agg.late - late_before
        return _Work(
            closed=closed,
            docs=docs,
            seen_s=taken.received_s,
            quarters=updates,
            measured_s=[last.measured_s for _, last in taken.newest.values()],
            counts=counts_out,
        )

    def _take(self, items: list[tuple[TelemetryReported, Record]], taken: _Taken) -> None:
        """Check readings and fold the valid ones into live state and open quarters (in memory)."""
        received_s = taken.received_s
        for msg, record in items:
            t = msg.measured_at.timestamp()
            order = self._accept(msg, t, record, received_s, taken.added, taken.refused)
            if order is None:
                continue
            taken.counts[order] += 1
            self.received[msg.site_id] = received_s
            if order is Order.NEWER:
                last = advance(self.last.get(msg.site_id), msg, t)
                self.last[msg.site_id] = last
                taken.newest[msg.site_id] = (msg, last)

    def _chain(self, work: _Work) -> asyncio.Task[None]:
        sent = asyncio.Event()
        task = asyncio.create_task(self._finish(self._tail, self._sent, sent, work))
        self._tail, self._sent = task, sent
        return task

    async def _finish(
        self, prev: asyncio.Task[None] | None, prev_sent: asyncio.Event, sent: asyncio.Event, work: _Work
    ) -> None:
        """Publish (in batch order, overlapping earlier finishes), then write Redis after the previous."""
        try:
            try:
                await prev_sent.wait()
                acks = await self._send(work.closed)
            finally:
                sent.set()
            await acks
            if prev is not None:
                await asyncio.wait([prev])
                if prev.cancelled() or prev.exception() is not None:
                    raise RuntimeError("an earlier batch failed to finish")
            await self.store.save_json(work.docs, work.seen_s, work.quarters)
        except BaseException:
            self._reset()
            raise
        for quality, n in collections.Counter(q.quality.value for q in work.closed).items():
            self.quarters.labels(quality=quality).inc(n)
        written_s = time.time()
        self.lag.observe_many([max(0.0, written_s - measured_s) for measured_s in work.measured_s])
        for outcome, n in work.counts.items():
            # late_for_quarter: valid, but arrived after its quarter was published (not folded in)
            self.readings.labels(outcome=outcome).inc(n)

    def _reset(self) -> None:
        """Forget what this process holds of every site: after a failure, Redis is what to resume from."""
        self._epoch += 1
        self.loader.discard()
        self._tail = None
        self._sent = asyncio.Event()
        self._sent.set()
        self.last.clear()
        self.agg.sites.clear()
        self.agg.reshaped.clear()
        # Silent sites are in no batch that would bring them back: the sweep takes them over again.
        self.received.clear()
        self._adopted_to = None

    def _quarter_updates(self, added: dict[str, list[Sample]]) -> dict[str, bytes]:
        """Return open-quarter updates: a whole snapshot where a quarter changed shape, else new samples."""
        out: dict[str, bytes] = {}
        for site_id in self.agg.reshaped:
            out[site_id] = b"S" + self.agg.snapshot(site_id) if site_id in self.agg.sites else b"D"
        self.agg.reshaped.clear()
        for site_id, samples in added.items():
            if site_id not in out:
                out[site_id] = b"A" + sample_lines(samples)
        return out

    async def _warm(self, site_ids: list[str]) -> None:
        """Load the last state, open quarter and protection times of sites this process has not seen yet."""
        unknown = [s for s in site_ids if s not in self.last]
        if not unknown:
            return
        loaded = await self.loader.load(unknown, self._epoch)
        # What this process holds is newer than Redis: it is the only writer of its sites.
        for site_id, state in loaded.states.items():
            self.last.setdefault(site_id, last_of(state))
        for site_id, text in loaded.quarters.items():
            if site_id not in self.agg.sites:
                self.agg.restore(site_id, text)
        for site_id, (run, rest) in loaded.timings.items():
            if site_id not in self.heard:
                self.timings[site_id] = Timing.of_minutes(run, rest)

    async def on_site(self, site: SiteMasterDataChanged, _: Delivery) -> None:
        """Store a registered site's minimum run and lock-out (HP-Hub 105) for whichever replica loads it."""
        self.hear(site)
        minutes = None if site.deleted else (site.min_run_minutes, site.lockout_minutes)
        await self.store.set_timing(site.site_id, minutes)

    def hear(self, site: SiteMasterDataChanged) -> None:
        """Take a registry change's protection times for the site's live state."""
        self.heard.add(site.site_id)
        if site.deleted:
            self.timings.pop(site.site_id, None)
        else:
            self.timings[site.site_id] = Timing.of_minutes(site.min_run_minutes, site.lockout_minutes)

    async def follow_registry_forever(self) -> None:
        """Hear every registry change, also those the registry group gives another replica."""
        positions: dict[int, int] = {}
        while True:
            tail = RegistryTail(self.settings.resolved_kafka_bootstrap(), positions)
            try:
                await self.follow_registry(tail)
            except Exception:  # e.g. the broker went away: resume where the tail stopped
                LOGGER.exception("following %s failed; resuming", topics.SITES_REGISTRY.name)
                await asyncio.sleep(1.0)
            finally:
                await tail.stop()

    async def follow_registry(self, tail: RegistryTail) -> None:
        """Take position on the tail, then hear what it brings until it fails."""
        await tail.start()
        self.following.set()
        async for site in tail.changes():
            self.hear(site)

    def _accept(
        self,
        msg: TelemetryReported,
        t: float,
        record: Record,
        now_s: float,
        added: dict[str, list[Sample]],
        refused: list[tuple[Record, str, str]],
    ) -> Order | None:
        try:
            order = check_reading(msg, self.last.get(msg.site_id), now_s, self.limits, t)
            if order is not Order.DUPLICATE:
                sample = sample_of(msg, t)
                if self.agg.add(msg.site_id, sample):
                    added.setdefault(msg.site_id, []).append(sample)
        except InvalidReading as exc:
            refused.append((record, exc.kind, exc.reason))
            return None
        except MeterOrderError as exc:
            refused.append((record, "meter_not_monotone", str(exc)))
            return None
        return order

    async def _park(self, record: Record, kind: str, reason: str) -> None:
        self.readings.labels(outcome="rejected").inc()
        await self.service.consumer.sink.park(record, kind, reason)

    async def _send(self, quarters: list[ClosedQuarter]) -> asyncio.Future[Any]:
        """Hand quarters to the producer; return what completes once the broker has every one."""
        if self.producer is None:
            raise RuntimeError("the quarter producer is not connected")
        return await self.producer.enqueue(quarters)

    async def sweep_forever(self) -> None:
        """Run the freshness and idle-quarter sweep every sweep_interval_s."""
        await self.ready.wait()
        while True:
            await asyncio.sleep(self.settings.sweep_interval_s)
            try:
                await self.sweep()
            except Exception:  # a failed sweep is retried next time; the service keeps consuming
                LOGGER.exception("telemetry sweep failed")

    async def sweep(self) -> None:
        """Count stale/offline sites, mark those that just crossed a threshold, close idle quarters."""
        now = time.time()
        s = self.settings
        total = await self.store.total()
        offline = await self.store.count_between(float("-inf"), now - s.offline_after_s)
        stale = await self.store.count_between(now - s.offline_after_s, now - s.stale_after_s) if total else 0
        self.sites.labels(status=GatewayStatus.OFFLINE.value).set(offline)
        self.sites.labels(status=GatewayStatus.STALE.value).set(stale)
        self.sites.labels(status=GatewayStatus.OK.value).set(max(0, total - offline - stale))
        await self._mark(GatewayStatus.STALE, s.stale_after_s, now)
        await self._mark(GatewayStatus.OFFLINE, s.offline_after_s, now)
        self._last_sweep = now
        await self._adopt_silent(now)
        async with self._in_memory:
            closed = self._close_idle(now)
            if not (closed or self.agg.reshaped):
                return
            finish = self._chain(
                _Work(closed=closed, docs={}, seen_s=now, quarters=self._quarter_updates({}))
            )
        await finish

    async def _adopt_silent(self, now: float) -> None:
        """Take over open quarters of this process's sites that fell silent before it saw them.

        After a restart or a rebalance a silent site is in no batch, so without this its quarters would
        stay open until it reports again instead of closing (missing) on the silence timer.
        """
        if self._owned is None or not self._owned[1]:
            return
        (partitions, count), s = self._owned, self.settings
        oldest = now - s.max_age_h * 3600.0 if self._adopted_to is None else self._adopted_to
        silent = await self.store.last_seen_between(oldest, now - s.idle_close_s, ADOPT_LIMIT)
        # Sites of one batch share an arrival time: a cut page resumes just before its last one.
        adopted_to = silent[-1][1] - 1e-3 if len(silent) == ADOPT_LIMIT else now - s.idle_close_s
        mine = {
            site_id: arrived_s
            for site_id, arrived_s in silent
            if site_id not in self.received and partition_of(site_id.encode(), count) in partitions
        }
        epoch = self._epoch
        loaded = await self.store.load_sites(list(mine)) if mine else LoadedSites()
        async with self._in_memory:
            if epoch != self._epoch:  # a batch failed meanwhile: the next sweep reads again
                return
            for site_id, text in loaded.quarters.items():
                if site_id not in self.agg.sites and site_id not in self.received:  # no batch came first
                    self.agg.restore(site_id, text)
                    self.received[site_id] = mine[site_id]
            self._adopted_to = adopted_to  # only once taken over: a failed load is read again

    async def _mark(self, status: GatewayStatus, after_s: float, now: float) -> None:
        """Give sites whose last reading arrived before now - after_s the status, unless one came since."""
        ids = await self.store.seen_between(self._last_sweep - after_s - 1.0, now - after_s)
        cutoff = now - after_s
        changes: dict[str, tuple[bytes, bytes]] = {}
        for site_id, raw in (await self.store.load_raw(ids)).items():
            st = SiteLiveState.model_validate_json(raw)
            if (
                st.received_at is not None
                and st.received_at.timestamp() <= cutoff
                and st.gateway_status != status
            ):
                marked = st.model_copy(update={"gateway_status": status, "updated_at": utc_now()})
                changes[site_id] = (raw, marked.model_dump_json().encode())
        await self.store.replace_states(changes)

    def _close_idle(self, now: float) -> list[ClosedQuarter]:
        out: list[ClosedQuarter] = []
        forget_before = now - self.settings.max_age_h * 3600.0
        for site_id, last in list(self.received.items()):
            if now - last < self.settings.idle_close_s:
                continue
            if last < forget_before:
                del self.received[site_id]
                if self.agg.sites.pop(site_id, None) is not None:
                    self.agg.reshaped.add(site_id)  # its stored open quarter goes too
                continue
            latest = self.agg.sites[site_id].latest() if site_id in self.agg.sites else None
            if latest is not None:
                out += self.agg.close_idle(site_id, latest.t + (now - last))
        return out
