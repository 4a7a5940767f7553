"""site_sim and telemetry as real processes on the real broker and Redis: readings become live state,
commands are acknowledged, bad readings are dead-lettered with their reason."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import RecordMetadata

from hybridpool_shared import topics
from hybridpool_shared.messages import (
    AggregateQuality,
    CommandAcknowledged,
    DeadLettered,
    QuarterAggregated,
    SgReadyState,
    SwitchHeatPump,
)
from hybridpool_shared.sitestate import GatewayStatus, SiteLiveState, state_key
from hybridpool_shared.timeutil import floor_quarter, utc_now
from services.telemetry.adapters import TIMING_KEY, quarter_key
from tests.infra import Infra, RunningService, produce, registered_villa, running, unique, wait_for_records

pytestmark = pytest.mark.integration
SITES = 12
TELEMETRY_ENV = {
    "TELEMETRY_SWEEP_INTERVAL_S": "1",
    "TELEMETRY_STALE_AFTER_S": "6",
    "TELEMETRY_OFFLINE_AFTER_S": "10",
}


@pytest.fixture(scope="module")
def pipeline(infra: Infra) -> Iterator[tuple[RunningService, RunningService, str]]:
    """A telemetry process and a small simulated fleet reporting every 2 s."""
    prefix = unique("itv")
    sim_env = {
        "SITE_SIM_SITES": str(SITES),
        "SITE_SIM_SITE_PREFIX": prefix,
        "SITE_SIM_TELEMETRY_INTERVAL_S": "2",
        "SITE_SIM_PHYSICS_STEP_S": "1",
        "SITE_SIM_SEED": "11",
    }
    with (
        running("telemetry", infra, TELEMETRY_ENV) as tel,
        running("site_sim", infra, sim_env) as sim,
    ):
        yield tel, sim, prefix


async def _get(url: str, **params: object) -> Any:
    async with httpx.AsyncClient(timeout=5) as client:
        return (await client.get(url, params=params)).json()  # type: ignore[arg-type]


async def _fleet(sim: RunningService) -> list[dict[str, object]]:
    page = await _get(f"{sim.url}/fleet", limit=100)
    return [await _get(f"{sim.url}/fleet/{i['site_id']}") for i in page["items"]]


async def _states(redis_url: str, site_ids: list[str], timeout: float = 60.0) -> dict[str, SiteLiveState]:
    client = aioredis.from_url(redis_url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            raw = [await client.hget(state_key(s), "json") for s in site_ids]
            if all(raw) or time.monotonic() > deadline:
                return {
                    s: SiteLiveState.model_validate_json(r) for s, r in zip(site_ids, raw, strict=True) if r
                }
            await asyncio.sleep(0.2)
    finally:
        await client.aclose()


async def test_live_state_of_the_simulated_fleet_appears_in_redis(
    infra: Infra, pipeline: tuple[RunningService, RunningService, str]
) -> None:
    _, sim, prefix = pipeline
    fleet = await _fleet(sim)
    assert len(fleet) == SITES
    online = [f["master"]["site_id"] for f in fleet if not f["offline"]]  # type: ignore[index]
    states = await _states(infra.redis_url, online)
    assert sorted(states) == sorted(online)
    for site in fleet:
        sid = site["master"]["site_id"]  # type: ignore[index]
        if sid in states:
            st = states[sid]
            assert st.site_id.startswith(prefix)
            assert st.gateway_status is GatewayStatus.OK
            assert abs((utc_now() - st.measured_at).total_seconds()) < 30
            assert st.meter_reading_kwh == pytest.approx(site["meter_kwh"], abs=1.0)


async def test_commands_are_acknowledged_accepted_or_refused_with_a_reason(
    infra: Infra, pipeline: tuple[RunningService, RunningService, str]
) -> None:
    from faststream.kafka import KafkaBroker

    from hybridpool_shared.messaging import publish

    _, sim, _ = pipeline
    site = next(f for f in await _fleet(sim) if not f["offline"] and not f["unresponsive"])
    site_id = site["master"]["site_id"]  # type: ignore[index]
    now = utc_now()
    good = SwitchHeatPump(
        command_id=unique("cmd"),
        site_id=site_id,
        seq=1,
        sg_ready_state=SgReadyState.NORMAL,
        issued_at=now,
        valid_until=now + timedelta(minutes=5),
    )
    expired = good.model_copy(
        update={
            "command_id": unique("cmd"),
            "seq": 2,
            "issued_at": now - timedelta(minutes=10),
            "valid_until": now - timedelta(minutes=5),
        }
    )
    broker = KafkaBroker(infra.kafka_bootstrap)
    await broker.connect()
    try:
        await publish(broker, topics.DISPATCH_COMMANDS, good)
        await publish(broker, topics.DISPATCH_COMMANDS, expired)
    finally:
        await broker.stop()
    ids = {good.command_id, expired.command_id}
    records = await wait_for_records(
        infra.kafka_bootstrap,
        topics.DISPATCH_ACKS.name,
        lambda r: json.loads(r.value)["command_id"] in ids,
        count=2,
    )
    acks = {a.command_id: a for a in (CommandAcknowledged.from_json_bytes(r.value) for r in records)}
    assert acks[good.command_id].accepted
    assert not acks[expired.command_id].accepted
    assert "lease expired" in acks[expired.command_id].reason
    truth = await _get(f"{sim.url}/ground-truth", command_id=good.command_id)
    assert [t["site_id"] for t in truth] == [site_id]


async def test_bad_readings_are_dead_lettered_with_their_reason(
    infra: Infra, pipeline: tuple[RunningService, RunningService, str]
) -> None:
    site_id = unique("bad-villa")
    future = {
        "site_id": site_id,
        "measured_at": (utc_now() + timedelta(hours=2)).isoformat(),
        "electric_power_kw": 1.0,
        "meter_reading_kwh": 10.0,
        "heat_power_kw": 3.0,
        "supply_temp_c": 40.0,
        "return_temp_c": 35.0,
        "indoor_temp_c": 21.0,
        "outdoor_temp_c": 1.0,
        "hp_running": True,
        "boiler_running": False,
        "sg_ready_state": 2,
    }
    malformed = {**future, "measured_at": utc_now().isoformat(), "electric_power_kw": "lots"}
    await produce(
        infra.kafka_bootstrap, topics.SITES_TELEMETRY.name, json.dumps(future).encode(), site_id.encode()
    )
    await produce(
        infra.kafka_bootstrap, topics.SITES_TELEMETRY.name, json.dumps(malformed).encode(), site_id.encode()
    )
    records = await wait_for_records(
        infra.kafka_bootstrap,
        topics.SITES_TELEMETRY.dlq,
        lambda r: site_id.encode() in r.value and b"hybridpool.telemetry." in r.value,
        count=2,
    )
    kinds = {DeadLettered.from_json_bytes(r.value).error_kind for r in records}
    assert kinds == {"future_timestamp", "validation"}
    assert await _states(infra.redis_url, [site_id], timeout=1.0) == {}


def _gauge(text: str, status: str) -> float:
    line = next(
        x for x in text.splitlines() if x.startswith(f'hybridpool_telemetry_sites{{status="{status}"}}')
    )
    return float(line.rsplit(" ", 1)[1])


async def test_a_silent_site_turns_stale_then_offline_and_is_counted(
    infra: Infra, pipeline: tuple[RunningService, RunningService, str]
) -> None:
    tel, _, _ = pipeline
    site_id = unique("quiet-villa")
    reading = {
        "site_id": site_id,
        "measured_at": utc_now().isoformat(),
        "electric_power_kw": 0.0,
        "meter_reading_kwh": 10.0,
        "heat_power_kw": 0.0,
        "supply_temp_c": 23.0,
        "return_temp_c": 22.0,
        "indoor_temp_c": 21.0,
        "outdoor_temp_c": 1.0,
        "hp_running": False,
        "boiler_running": False,
        "sg_ready_state": 2,
    }
    await produce(
        infra.kafka_bootstrap, topics.SITES_TELEMETRY.name, json.dumps(reading).encode(), site_id.encode()
    )
    seen: set[GatewayStatus] = set()
    deadline = time.monotonic() + 40
    while GatewayStatus.OFFLINE not in seen and time.monotonic() < deadline:
        states = await _states(infra.redis_url, [site_id], timeout=0.5)
        if site_id in states:
            seen.add(states[site_id].gateway_status)
        await asyncio.sleep(0.3)
    assert seen >= {GatewayStatus.OK, GatewayStatus.OFFLINE}
    metrics = await _text(f"{tel.url}/metrics")
    assert _gauge(metrics, "offline") >= 1
    assert _gauge(metrics, "ok") >= 1  # the reporting fleet


async def _text(url: str) -> str:
    async with httpx.AsyncClient(timeout=5) as client:
        return (await client.get(url)).text


async def test_a_closed_quarter_is_published_with_the_apportioned_meter_delta(
    infra: Infra, pipeline: tuple[RunningService, RunningService, str]
) -> None:
    site_id = unique("quarter-villa")
    quarter = floor_quarter(utc_now()) - timedelta(minutes=30)
    first = _villa_reading(site_id, quarter + timedelta(minutes=14), 100.0)
    # 130 s past the quarter's end: beyond the default 120 s grace, so the quarter closes
    second = _villa_reading(site_id, quarter + timedelta(seconds=1030), 101.9)
    for reading in (first, second):
        await produce(infra.kafka_bootstrap, topics.SITES_TELEMETRY.name, reading, site_id.encode())
    records = await wait_for_records(
        infra.kafka_bootstrap, topics.SITES_TELEMETRY_QUARTER.name, lambda r: site_id.encode() in r.value
    )
    agg = QuarterAggregated.from_json_bytes(records[0].value)
    assert agg.interval_start == quarter
    assert agg.quality is AggregateQuality.ESTIMATED  # readings cover only its last minute
    assert agg.energy_kwh == pytest.approx(1.9 * 60 / 190)
    assert agg.energy_apportioned_kwh == pytest.approx(agg.energy_kwh)


async def test_registered_protection_times_shape_the_live_state(
    infra: Infra, pipeline: tuple[RunningService, RunningService, str]
) -> None:
    from faststream.kafka import KafkaBroker

    from hybridpool_shared.messaging import publish

    site_id = unique("registered-villa")
    site = registered_villa(site_id, min_run_minutes=20, lockout_minutes=25)
    broker = KafkaBroker(infra.kafka_bootstrap)
    await broker.connect()
    try:
        await publish(broker, topics.SITES_REGISTRY, site)
    finally:
        await broker.stop()
    client = aioredis.from_url(infra.redis_url)
    try:
        async with asyncio.timeout(30):
            while not await client.hexists(TIMING_KEY, site_id):
                await asyncio.sleep(0.2)
    finally:
        await client.aclose()
    at = utc_now() - timedelta(seconds=5)
    reading = {
        "site_id": site_id,
        "measured_at": at.isoformat(),
        "electric_power_kw": 0.0,
        "meter_reading_kwh": 50.0,
        "heat_power_kw": 0.0,
        "supply_temp_c": 25.0,
        "return_temp_c": 24.0,
        "indoor_temp_c": 21.0,
        "outdoor_temp_c": 3.0,
        "hp_running": False,
        "boiler_running": False,
        "sg_ready_state": 2,
    }
    await produce(
        infra.kafka_bootstrap, topics.SITES_TELEMETRY.name, json.dumps(reading).encode(), site_id.encode()
    )
    state = (await _states(infra.redis_url, [site_id]))[site_id]
    assert state.stopped_since == at
    assert state.lockout_ends_at == at + timedelta(minutes=25)


def _villa_reading(site_id: str, at: datetime, meter_kwh: float) -> bytes:
    return json.dumps(
        {
            "site_id": site_id,
            "measured_at": at.isoformat(),
            "electric_power_kw": 2.0,
            "meter_reading_kwh": meter_kwh,
            "heat_power_kw": 6.0,
            "supply_temp_c": 40.0,
            "return_temp_c": 35.0,
            "indoor_temp_c": 21.0,
            "outdoor_temp_c": 1.0,
            "hp_running": True,
            "boiler_running": False,
            "sg_ready_state": 2,
        }
    ).encode()


async def _send(bootstrap: str, site_id: str, readings: list[tuple[datetime, float]]) -> RecordMetadata:
    """Publish a site's readings in order; return where the last one landed."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        meta = None
        for at, meter in readings:
            meta = await producer.send_and_wait(
                topics.SITES_TELEMETRY.name, _villa_reading(site_id, at, meter), key=site_id.encode()
            )
        assert meta is not None
        return meta
    finally:
        await producer.stop()


async def _wait_committed(bootstrap: str, meta: RecordMetadata, timeout: float = 30.0) -> None:
    """Wait until the telemetry group has committed past a record (so it is never redelivered)."""
    tp = TopicPartition(meta.topic, meta.partition)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=f"hybridpool.telemetry.{topics.SITES_TELEMETRY.name}",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        async with asyncio.timeout(timeout):
            while (await consumer.committed(tp) or 0) <= meta.offset:
                await asyncio.sleep(0.2)
    finally:
        await consumer.stop()


async def test_a_restart_mid_quarter_keeps_the_quarters_energy_equal_to_the_meter_delta(
    private_infra: Infra,
) -> None:
    infra = private_infra  # its own broker and Redis: no other telemetry process shares the group
    site_id = unique("restart-villa")
    q = floor_quarter(utc_now()) - timedelta(hours=1)
    before = [(q, 100.0), (q + timedelta(minutes=5), 100.5), (q + timedelta(minutes=10), 101.0)]
    after = [(q + timedelta(minutes=15), 101.6), (q + timedelta(minutes=18), 101.9)]
    client = aioredis.from_url(infra.redis_url)
    try:
        with running("telemetry", infra, TELEMETRY_ENV):
            last = await _send(infra.kafka_bootstrap, site_id, before)
            await _wait_committed(infra.kafka_bootstrap, last)
            # committed: these readings are never delivered again, only Redis can bring them back
            assert (await _states(infra.redis_url, [site_id]))[site_id].measured_at == before[-1][0]
            assert await client.exists(quarter_key(site_id))
        with running("telemetry", infra, TELEMETRY_ENV):
            await _send(infra.kafka_bootstrap, site_id, after)
            records = await wait_for_records(
                infra.kafka_bootstrap,
                topics.SITES_TELEMETRY_QUARTER.name,
                lambda r: site_id.encode() in r.value,
            )
    finally:
        await client.aclose()
    agg = QuarterAggregated.from_json_bytes(records[0].value)
    assert agg.interval_start == q
    assert agg.readings == 3  # the three from before the restart
    assert agg.quality is AggregateQuality.MEASURED
    assert agg.energy_kwh == pytest.approx(101.6 - 100.0)  # meter at the quarter's end minus at its start
