"""Ops-room read models on a real Redis: live aggregation with activation sampling, alarms, idempotent
handlers, and the audit chain under concurrent writers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import redis.asyncio as aioredis

from hybridpool_shared.messages import Direction, PoolActivated, ReactionMeasured, ReserveProduct
from hybridpool_shared.messaging import Delivery
from hybridpool_shared.sitestate import STATE_INDEX_KEY, SiteLiveState, state_key
from hybridpool_shared.timeutil import utc_now
from services.opsroom.adapters import OpsStore
from services.opsroom.domain import AuditDraft, Freshness, verify_audit
from services.opsroom.handlers import Handlers
from services.opsroom.live import Aggregator, Broadcaster, LiveState, ReportSource
from tests.infra import Infra, unique

pytestmark = pytest.mark.integration
OWN_DB = 7  # a database of its own: the fleet index must hold only this test's sites
DELIVERY = Delivery(topic="t", partition=0, offset=0, key=None, timestamp_ms=0)


@pytest.fixture
async def redis(infra: Infra) -> AsyncIterator[aioredis.Redis]:
    """A clean Redis database of the session's real server."""
    base = infra.redis_url.rsplit("/", 1)[0] if infra.redis_url.count("/") > 2 else infra.redis_url
    client = aioredis.from_url(f"{base}/{OWN_DB}")
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


async def put_states(redis: aioredis.Redis, running: dict[str, bool], age_s: float = 1.0) -> None:
    now = utc_now()
    for site_id, on in running.items():
        state = SiteLiveState(
            site_id=site_id,
            measured_at=now - timedelta(seconds=age_s),
            electric_power_kw=3.0 if on else 0.0,
            meter_reading_kwh=1.0,
            hp_running=on,
            boiler_running=not on,
            sg_ready_state=2,
            indoor_temp_c=21.0,
            outdoor_temp_c=2.0,
            updated_at=now,
        )
        await redis.hset(state_key(site_id), mapping=state.to_redis())
        await redis.sadd(STATE_INDEX_KEY, site_id)


def parts(
    redis: aioredis.Redis, reports: ReportSource | None = None
) -> tuple[OpsStore, LiveState, Broadcaster, Aggregator, Handlers]:
    store, live, hub = OpsStore(redis), LiveState(), Broadcaster()
    aggregator = Aggregator(
        store, live, hub, Freshness(60, 300), tick_s=0.5, alarm_share=0.2, reports=reports
    )
    return store, live, hub, aggregator, Handlers(store, live, hub, quarters_kept=8)


async def test_activation_is_pushed_at_once_and_sampled_against_its_baseline(redis: aioredis.Redis) -> None:
    store, _, hub, aggregator, handlers = parts(redis)
    sites = {unique("villa"): True for _ in range(10)}
    await put_states(redis, sites)
    now = utc_now()
    activation = PoolActivated(
        activation_id=unique("act"),
        product=ReserveProduct.MFRR_ENERGY,
        direction=Direction.UP,
        power_mw=0.012,
        start=now,
        end=now + timedelta(minutes=10),
        requested_at=now,
    )
    async with hub.subscribe() as queue:
        await handlers.activation(activation, DELIVERY)
        await handlers.activation(activation, DELIVERY)  # redelivery: no second event
        frame = queue.get_nowait()
        assert frame.startswith("event: activation\n")
        assert activation.activation_id in frame
        assert queue.empty()

    first = await aggregator.tick(utc_now())
    assert first["fleet"]["pool_power_kw"] == pytest.approx(30.0)
    assert first["activation"]["delivered_kw"] == pytest.approx(0.0)

    await put_states(redis, {site_id: n >= 4 for n, site_id in enumerate(sites)})  # four HPs off
    second = await aggregator.tick(utc_now())
    assert second["activation"]["delivered_kw"] == pytest.approx(12.0)
    assert second["activation"]["verdict"] == "compliant"
    assert second["fleet"]["on_gas"] == 4
    points = await store.curve_points(activation.activation_id)
    assert [p.delivered_kw for p in points] == pytest.approx([0.0, 12.0])


async def test_stale_data_alarm_is_raised_cleared_and_acknowledged(redis: aioredis.Redis) -> None:
    store, _, _, aggregator, _ = parts(redis)
    ids = [unique("villa") for _ in range(4)]
    await put_states(redis, dict.fromkeys(ids, True), age_s=120)
    overview = await aggregator.tick(utc_now())
    assert [a["kind"] for a in overview["alarms"]] == ["data_stale"]
    await put_states(redis, dict.fromkeys(ids, True))
    cleared = await aggregator.tick(utc_now())
    assert cleared["alarms"][0]["cleared_at"] is not None  # still listed until acknowledged
    await store.acknowledge_alarm("data-stale", "op-1", utc_now())
    assert (await aggregator.tick(utc_now()))["alarms"] == []


async def test_reactions_are_idempotent_per_command(redis: aioredis.Redis) -> None:
    store, _, _, _, handlers = parts(redis)
    site_id, activation_id = unique("villa"), unique("act")
    now = utc_now()
    reaction = ReactionMeasured(
        command_id=unique("cmd"),
        site_id=site_id,
        activation_id=activation_id,
        sent_at=now,
        reached_50_at=now + timedelta(seconds=4),
        expected_change_kw=-3.0,
        responded=True,
    )
    await handlers.reaction([(reaction, DELIVERY), (reaction, DELIVERY)])
    samples = (await store.reaction_samples([site_id]))[site_id]
    assert len(samples) == 1
    assert samples[0].t50_s == pytest.approx(4.0)
    assert len(await store.activation_reactions(activation_id)) == 1


async def test_audit_chain_holds_under_concurrent_writers(redis: aioredis.Redis) -> None:
    stores = [OpsStore(redis) for _ in range(4)]
    drafts = [AuditDraft("op-1", "operator", "site.exclude", "allowed", f"villa-{n}") for n in range(20)]
    await asyncio.gather(*(stores[n % 4].audit(d, utc_now()) for n, d in enumerate(drafts)))
    records = await stores[0].audit_records()
    assert [r.seq for r in records] == list(range(20))
    assert verify_audit(records) is None
    raw = json.loads(await redis.lindex("opsroom:audit", 5))
    await redis.lset("opsroom:audit", 5, json.dumps(raw | {"site_id": "villa-forged"}))
    assert verify_audit(await stores[0].audit_records()) == 5


async def test_dispatch_report_is_preferred_over_the_pool_baseline(redis: aioredis.Redis) -> None:
    """Dispatch knows which sites it moved: its delivered power wins over pool power, which new sites skew."""
    known: dict[str, dict[str, object]] = {}

    async def reports(activation_id: str) -> dict[str, object] | None:
        return known.get(activation_id)

    _, _, _, aggregator, handlers = parts(redis, reports)
    await put_states(redis, {unique("villa"): True for _ in range(5)})
    now = utc_now()
    activation = PoolActivated(
        activation_id=unique("act"),
        product=ReserveProduct.MFRR_ENERGY,
        direction=Direction.UP,
        power_mw=0.01,
        start=now,
        end=now + timedelta(minutes=10),
        requested_at=now,
    )
    await handlers.activation(activation, DELIVERY)
    first = await aggregator.tick(utc_now())
    assert first["activation"]["measured_by"] == "pool power vs baseline"
    await put_states(redis, {unique("villa"): True for _ in range(5)})  # new sites join: pool power rises
    known[activation.activation_id] = {
        "curve": [["2026-01-01T00:00:00Z", 0.0, 10.0], ["2026-01-01T00:00:01Z", 6.5, 10.0]]
    }
    second = await aggregator.tick(utc_now())
    assert second["activation"]["measured_by"] == "dispatch report"
    assert second["activation"]["delivered_kw"] == pytest.approx(6.5)


async def test_only_the_newest_plans_are_kept(redis: aioredis.Redis) -> None:
    store = OpsStore(redis)
    first = utc_now().replace(microsecond=0)
    for n in range(5):
        data = {
            "first_quarter_start": (first + timedelta(hours=n)).isoformat(),
            "hp_on": [True],
            "expected_hp_power_kw": [1.0],
        }
        await store.put_plans([(f"plan-{n}", "villa-1", first + timedelta(hours=n), data)])
    latest = await store.latest_plan()
    assert latest is not None
    assert latest[0] == "plan-4"
    assert await redis.zcard("opsroom:plans") == 3
    assert not await redis.exists("opsroom:plan:plan-0", "opsroom:plan:plan-1")
