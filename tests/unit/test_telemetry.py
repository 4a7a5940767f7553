"""Telemetry checks, live-state transitions and quarter aggregates, without I/O."""

from __future__ import annotations

import asyncio
import gc
import itertools
import random
from collections import deque
from datetime import UTC, date, datetime, timedelta

import orjson
import pytest
from aiokafka import ConsumerRecord, TopicPartition

from hybridpool_shared import fastbatch, topics
from hybridpool_shared.messages import AggregateQuality, QuarterAggregated, TelemetryReported
from hybridpool_shared.metrics import ServiceMetrics
from hybridpool_shared.timeutil import local_day_bounds, quarters_in_local_day
from services.telemetry.app import tune_gc
from services.telemetry.domain.quarters import (
    ClosedQuarter,
    MeterOrderError,
    QuarterAggregator,
    Sample,
    sample_lines,
)
from services.telemetry.domain.state import last_of, next_state
from services.telemetry.domain.validation import InvalidReading, Order, check_reading

T0 = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)


def _reading(at: datetime, meter: float, **kw: object) -> TelemetryReported:
    fields: dict[str, object] = {
        "site_id": "v1",
        "measured_at": at,
        "electric_power_kw": 2.0,
        "meter_reading_kwh": meter,
        "heat_power_kw": 6.0,
        "supply_temp_c": 40.0,
        "return_temp_c": 35.0,
        "indoor_temp_c": 21.0,
        "outdoor_temp_c": 2.0,
        "hp_running": True,
        "boiler_running": False,
        "sg_ready_state": 2,
    }
    fields.update(kw)
    return TelemetryReported.model_validate(fields)


def _meter_at(samples: list[Sample], t: float) -> float:
    """Linear interpolation of the meter between the readings around t (the test's own maths)."""
    for a, b in itertools.pairwise(samples):
        if a.t <= t <= b.t:
            return a.meter_kwh + (b.meter_kwh - a.meter_kwh) * (t - a.t) / (b.t - a.t)
    raise AssertionError("t outside the readings")


def _feed(agg: QuarterAggregator, samples: list[Sample], site: str = "v1") -> list[QuarterAggregated]:
    """Feed readings, returning the closed quarters as strictly validated messages."""
    out: list[QuarterAggregated] = []
    for s in samples:
        agg.add(site, s)
        out += [_validated(q) for q in agg.close_ready(site)]
    return out


def _validated(q: ClosedQuarter) -> QuarterAggregated:
    """The strict model of a closed quarter, checking that the JSON it is published as is the model's own."""
    msg = q.message()
    assert orjson.loads(q.to_json_bytes()) == orjson.loads(msg.to_json_bytes())
    return msg


def _series(start: float, end: float, seed: int = 1, step: float = 60.0) -> list[Sample]:
    rng = random.Random(seed)
    t, meter, samples = start, 1000.0, []
    while t < end:
        power = rng.choice([0.0, 0.0, 1.5, 3.0])
        samples.append(Sample(t, meter, power, power * 3, 21.0 + rng.random(), 1.0, power > 0, False))
        dt = step + rng.uniform(-20, 20)
        meter += power * dt / 3600.0 + rng.uniform(0, 0.01)
        t += dt
    return samples


@pytest.mark.parametrize(("day", "quarters"), [(date(2025, 10, 26), 100), (date(2026, 3, 29), 92)])
def test_quarters_of_a_dst_day_sum_to_the_meter_delta(day: date, quarters: int) -> None:
    start, end = (x.timestamp() for x in local_day_bounds(day))
    samples = _series(start - 700, end + 1000)
    out = _feed(QuarterAggregator(), samples)
    starts = {q.interval_start for q in out}
    day_quarters = [q for q in out if start <= q.interval_start.timestamp() < end]
    assert len(day_quarters) == quarters == len(quarters_in_local_day(day))
    assert {q.interval_start for q in day_quarters} == set(quarters_in_local_day(day)) & starts
    assert all(q.quality is AggregateQuality.MEASURED for q in day_quarters)
    total = sum(q.energy_kwh or 0.0 for q in day_quarters)
    assert total == pytest.approx(_meter_at(samples, end) - _meter_at(samples, start), abs=1e-9)
    assert all(q.energy_apportioned_kwh is not None for q in day_quarters)


def test_a_delta_spanning_a_boundary_is_split_by_time() -> None:
    t = T0.timestamp()
    agg = QuarterAggregator(max_gap_s=900, grace_s=0)
    out = _feed(agg, [Sample(t + 600, 0.0), Sample(t + 1200, 10.0), Sample(t + 1800, 10.0)])
    assert [q.energy_kwh for q in out] == [pytest.approx(5.0), pytest.approx(5.0)]
    assert out[0].energy_apportioned_kwh == pytest.approx(5.0)
    assert out[0].quality is AggregateQuality.ESTIMATED  # readings start inside it: only 5 of 15 min covered
    assert out[0].coverage_share == pytest.approx(1 / 3)
    assert out[1].quality is AggregateQuality.MEASURED


def test_a_gap_is_marked_estimated_and_still_adds_up() -> None:
    t = T0.timestamp()
    samples = [Sample(t + 60 * k, 10.0 + k) for k in range(0, 20)]
    samples += [Sample(t + 60 * k, 10.0 + k) for k in range(45, 70)]  # 25 min silence
    out = _feed(QuarterAggregator(max_gap_s=300), samples)
    quality = {q.interval_start.minute: q.quality for q in out}
    assert quality == {
        0: AggregateQuality.MEASURED,
        15: AggregateQuality.ESTIMATED,
        30: AggregateQuality.ESTIMATED,
        45: AggregateQuality.MEASURED,
    }
    assert sum(q.energy_kwh or 0 for q in out) == pytest.approx(_meter_at(samples, t + 3600) - 10.0)


def test_a_silent_site_gets_missing_quarters_then_revised_ones() -> None:
    t = T0.timestamp()
    agg = QuarterAggregator()
    _feed(agg, [Sample(t + 60 * k, float(k)) for k in range(0, 10)])
    idle = [_validated(q) for q in agg.close_idle("v1", t + 3 * 900 + 200)]
    assert [q.quality for q in idle] == [
        AggregateQuality.ESTIMATED,
        AggregateQuality.MISSING,
        AggregateQuality.MISSING,
    ]
    assert idle[1].energy_kwh is None  # never silently filled
    back = [Sample(t + 3000, 30.0), Sample(t + 3060, 31.0), Sample(t + 4000, 40.0)]
    revised = _feed(agg, back)
    again = [q for q in revised if q.revised]
    assert [q.interval_start.minute for q in again] == [0, 15, 30]
    assert all(q.quality is AggregateQuality.ESTIMATED and q.energy_kwh is not None for q in again)
    final = {q.interval_start: q.energy_kwh for q in [*idle, *revised]}  # upsert: later wins
    assert sum(v or 0 for v in final.values()) == pytest.approx(_meter_at([*back], t + 3600) - 0.0, abs=1e-9)


def test_out_of_order_and_duplicate_readings_give_the_same_quarters() -> None:
    samples = _series(T0.timestamp(), T0.timestamp() + 7200, seed=4, step=20)
    in_order = _feed(QuarterAggregator(grace_s=120), samples)
    shuffled = list(samples)
    for k in range(0, len(shuffled) - 3, 3):  # swap neighbours: late by one reading
        shuffled[k], shuffled[k + 1] = shuffled[k + 1], shuffled[k]
    agg = QuarterAggregator(grace_s=120)
    out = []
    for s in shuffled:
        agg.add("v1", s)
        assert not agg.add("v1", s), "a duplicate is ignored"
        out += agg.close_ready("v1")
    assert [q.energy_kwh for q in out] == pytest.approx([q.energy_kwh for q in in_order])


def test_a_reading_whose_meter_contradicts_its_neighbours_is_refused() -> None:
    t = T0.timestamp()
    agg = QuarterAggregator()
    agg.add("v1", Sample(t, 10.0))
    agg.add("v1", Sample(t + 120, 12.0))
    with pytest.raises(MeterOrderError):
        agg.add("v1", Sample(t + 60, 13.0))


def test_validation_refuses_future_and_backward_meter_and_accepts_duplicates() -> None:
    first = _reading(T0, 100.0)
    state = last_of(next_state(None, first, T0))
    with pytest.raises(InvalidReading, match="future") as future:
        check_reading(_reading(T0 + timedelta(minutes=5), 101.0), state, now=T0)
    assert future.value.kind == "future_timestamp"
    now = T0 + timedelta(minutes=10)
    with pytest.raises(InvalidReading) as back:
        check_reading(_reading(T0 + timedelta(minutes=1), 99.0), state, now=now)
    assert back.value.kind == "meter_decreased"
    assert check_reading(_reading(T0, 100.0), state, now=now) is Order.DUPLICATE
    with pytest.raises(InvalidReading, match="other meter value"):
        check_reading(_reading(T0, 100.5), state, now=now)
    assert check_reading(_reading(T0 - timedelta(minutes=1), 99.9), state, now=now) is Order.OLDER
    with pytest.raises(InvalidReading) as cop:
        check_reading(_reading(T0 + timedelta(minutes=1), 101.0, heat_power_kw=200.0), state, now=now)
    assert cop.value.kind == "implausible_cop"
    with pytest.raises(InvalidReading) as jump:
        check_reading(_reading(T0 + timedelta(minutes=1), 5000.0), state, now=now)
    assert jump.value.kind == "meter_jump"


def test_live_state_tracks_running_since_lockout_and_min_run() -> None:
    s1 = next_state(None, _reading(T0, 100.0, hp_running=True), T0)
    s2 = next_state(s1, _reading(T0 + timedelta(minutes=5), 100.2, hp_running=True), T0)
    assert s2.running_since == T0
    assert s2.min_run_ends_at == T0 + timedelta(minutes=15)
    assert not s2.can_stop(T0 + timedelta(minutes=10))
    stop_at = T0 + timedelta(minutes=20)
    s3 = next_state(s2, _reading(stop_at, 100.5, hp_running=False, electric_power_kw=0.0), stop_at)
    assert s3.stopped_since == stop_at
    assert s3.lockout_ends_at == stop_at + timedelta(minutes=15)
    assert not s3.can_start(stop_at + timedelta(minutes=14))
    assert s3.can_start(stop_at + timedelta(minutes=15))
    assert s3.running_since == T0  # the last run's start is kept for reference


def test_a_reading_later_than_its_published_quarter_is_counted_as_late() -> None:
    t = T0.timestamp()
    agg = QuarterAggregator(grace_s=0)
    out = _feed(agg, [Sample(t + 60 * k, float(k)) for k in range(0, 20)])
    assert [q.interval_start for q in out] == [T0]
    assert not agg.add("v1", Sample(t + 90, 1.5))
    assert agg.late == 1


def test_a_restored_snapshot_with_appended_samples_closes_the_same_quarters() -> None:
    t = T0.timestamp()
    samples = _series(t - 600, t + 3 * 900, seed=4)
    whole, resumed = QuarterAggregator(), QuarterAggregator()
    cut = len(samples) // 2
    expected = _feed(whole, samples)
    got = _feed(resumed, samples[: cut - 3])
    stored = resumed.snapshot("v1") + sample_lines(samples[cut - 3 : cut])  # three appended after it
    for s in samples[cut - 3 : cut]:
        resumed.add("v1", s)
    got += [_validated(q) for q in resumed.close_ready("v1")]
    restarted = QuarterAggregator()
    restarted.restore("v1", stored)
    got += _feed(restarted, samples[cut:])
    assert [q.model_dump() for q in got] == [q.model_dump() for q in expected]
    assert len(expected) >= 3


def _record(offset: int, site: str, meter: float = 1.0) -> ConsumerRecord[bytes, bytes]:
    value = _reading(T0, meter, site_id=site).to_json_bytes()
    return ConsumerRecord(
        "sites.telemetry", 0, offset, 0, 0, site.encode(), value, None, len(site), len(value), ()
    )


class _Commits:
    def __init__(self) -> None:
        self.offsets: list[int] = []

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.offsets += offsets.values()


class _Parked:
    def __init__(self) -> None:
        self.parked: list[tuple[int, str]] = []

    async def park(self, record: ConsumerRecord[bytes, bytes], kind: str, error: str) -> None:
        self.parked.append((record.offset, kind))


def _batch_consumer(
    handler: fastbatch.BatchHandler, monkeypatch: pytest.MonkeyPatch
) -> tuple[fastbatch.BatchConsumer, _Commits, _Parked]:
    monkeypatch.setattr(fastbatch, "BACKOFF_BASE_S", 0.0)
    sink = _Parked()
    consumer = fastbatch.BatchConsumer(
        topics.SITES_TELEMETRY,
        handler,
        bootstrap="127.0.0.1:1",
        group_id="test",
        sink=sink,  # type: ignore[arg-type]
        metrics=ServiceMetrics("test"),
        max_in_flight=3,
    )
    commits = _Commits()
    consumer.consumer = commits
    return consumer, commits, sink


async def test_a_failed_finish_redoes_its_batch_and_the_later_ones_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[list[str]] = []
    fail_once = asyncio.Event()

    async def finish(first: str) -> None:
        await asyncio.sleep(0)
        if first == "a" and not fail_once.is_set():
            fail_once.set()
            raise ConnectionError("redis went away")

    async def handler(items: list[tuple[TelemetryReported, fastbatch.Record]]) -> asyncio.Task[None]:
        seen.append([m.site_id for m, _ in items])
        return asyncio.create_task(finish(items[0][0].site_id))

    consumer, commits, sink = _batch_consumer(handler, monkeypatch)
    inflight: deque[fastbatch._InFlight] = deque()
    for batch in ([_record(0, "a"), _record(1, "b")], [_record(2, "c")], [_record(3, "d")]):
        inflight.append(await consumer._start(batch))
        await consumer._settle_ready(inflight, drain=False)
    await consumer._settle_ready(inflight, drain=True)
    assert seen[:3] == [["a", "b"], ["c"], ["d"]]  # overlapped
    assert seen[3:] == [["a", "b"], ["c"], ["d"]]  # then redone, in order, after the failure
    assert commits.offsets == [2, 3, 4]
    assert sink.parked == []


async def test_only_the_message_that_keeps_failing_is_parked(monkeypatch: pytest.MonkeyPatch) -> None:
    handled: list[str] = []

    async def handler(items: list[tuple[TelemetryReported, fastbatch.Record]]) -> None:
        if any(m.site_id == "poison" for m, _ in items):
            raise ValueError("cannot handle")
        handled.extend(m.site_id for m, _ in items)

    consumer, commits, sink = _batch_consumer(handler, monkeypatch)
    bad_json = ConsumerRecord("sites.telemetry", 0, 3, 0, 0, b"x", b"{", None, 1, 1, ())
    await consumer.handle([_record(0, "a"), _record(1, "poison"), _record(2, "b"), bad_json])
    assert sorted(handled) == ["a", "b"]
    assert sorted(sink.parked) == [(1, "retries_exhausted"), (3, "validation")]
    assert commits.offsets == [4]


async def test_a_batch_with_bad_records_parks_only_those_with_their_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def handler(items: list[tuple[TelemetryReported, fastbatch.Record]]) -> None:
        return None

    consumer, _, sink = _batch_consumer(handler, monkeypatch)
    good = [_record(0, "a"), _record(2, "b")]
    assert [m.site_id for m, _ in await consumer._parse(good)] == ["a", "b"]  # the whole-batch path
    loose = _reading(T0, 1.0).model_dump(mode="json") | {"sg_ready_state": "2"}  # strict: no coercion
    unstrict = ConsumerRecord("sites.telemetry", 0, 1, 0, 0, b"x", orjson.dumps(loose), None, 1, 1, ())
    tombstone = ConsumerRecord("sites.telemetry", 0, 3, 0, 0, b"x", None, None, 1, 0, ())
    parsed = await consumer._parse([good[0], unstrict, good[1], tombstone])
    assert [(r.offset, m.site_id) for m, r in parsed] == [(0, "a"), (2, "b")]
    assert sink.parked == [(1, "validation"), (3, "tombstone")]


def test_tune_gc_raises_the_young_threshold_and_keeps_the_older_ones() -> None:
    before = gc.get_threshold()
    try:
        tune_gc(before[0] + 12_345)
        assert gc.get_threshold() == (before[0] + 12_345, before[1], before[2])
        tune_gc(0)  # 0 leaves the threshold alone
        assert gc.get_threshold()[0] == before[0] + 12_345
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
