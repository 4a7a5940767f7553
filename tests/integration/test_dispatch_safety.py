"""Central safety on the real Redis: atomic claims, lock-out, min run, one switch per unit across workers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from hybridpool_shared.messages import Direction, Message, PoolActivated, ReserveProduct, SwitchHeatPump
from hybridpool_shared.topics import TopicSpec
from services.dispatch.adapters import ClaimRequest, SafetyStore
from services.dispatch.dispatcher import Dispatcher
from services.dispatch.metrics import DispatchMetrics
from services.dispatch.settings import DispatchSettings
from tests.infra import Infra, unique

pytestmark = pytest.mark.integration
MIN = 60_000


def _req(site: str, action: str, owner: str, free_ms: int = 0) -> ClaimRequest:
    return ClaimRequest(site, action, owner, unique("c"), 10**13, 15 * MIN, 15 * MIN, free_ms)


async def test_concurrent_claims_grant_exactly_one(redis: aioredis.Redis) -> None:
    store = SafetyStore(redis, unique("t"))
    site = unique("s")
    results = await asyncio.gather(
        *(store.claim([_req(site, "block", f"worker-{i % 2}-act-{i}")], 1_000 * MIN) for i in range(40))
    )
    granted = [r for (r,) in results if r.status == 1]
    assert len(granted) == 1
    assert granted[0].seq == 1
    assert all(r.reason.startswith("held by") for (r,) in results if r.status != 1)


async def test_lockout_and_min_run_are_enforced_centrally(redis: aioredis.Redis) -> None:
    store = SafetyStore(redis, unique("t"))
    site = unique("s")
    t0 = 1_000 * MIN
    (r,) = await store.claim([_req(site, "block", "a1")], t0)
    assert r.status == 1
    (early,) = await store.claim([_req(site, "release", "a1")], t0 + 5 * MIN)
    assert (early.status, early.reason) == (-1, "lock-out not over")
    (ok,) = await store.claim([_req(site, "release", "a1")], t0 + 15 * MIN)
    assert ok.status == 1
    assert ok.seq == 2
    (on_early,) = await store.claim([_req(site, "force_on", "a2")], t0 + 16 * MIN)
    assert on_early.status == 1  # lock-out ended at t0+15 min
    (stop_early,) = await store.claim([_req(site, "release", "a2")], t0 + 20 * MIN)
    assert (stop_early.status, stop_early.reason) == (-1, "min run not over")
    (live,) = await store.claim([_req(unique("s"), "force_on", "a3", free_ms=t0 + MIN)], t0)
    assert (live.status, live.reason) == (-1, "lock-out not over")  # the telemetry view counts too


async def test_same_owner_twice_is_a_duplicate_not_a_second_switch(redis: aioredis.Redis) -> None:
    store = SafetyStore(redis, unique("t"))
    site = unique("s")
    (first,) = await store.claim([_req(site, "block", "a1")], MIN)
    (again,) = await store.claim([_req(site, "block", "a1")], MIN + 1)
    assert first.status == 1
    assert again.status == 0
    assert again.command_id == first.command_id


class _Collect:
    def __init__(self) -> None:
        self.commands: list[SwitchHeatPump] = []

    async def __call__(self, spec: TopicSpec, message: Message) -> None:
        if isinstance(message, SwitchHeatPump):
            self.commands.append(message)


def _dispatcher(infra: Infra, redis: aioredis.Redis, prefix: str, now: float) -> tuple[Dispatcher, _Collect]:
    settings = DispatchSettings(kafka_bootstrap="unused:1", redis_url=infra.redis_url, key_prefix=prefix)
    sink = _Collect()
    d = Dispatcher(settings, redis, sink, DispatchMetrics(CollectorRegistry()), clock=lambda: now)
    for i in range(60):
        site = f"{prefix}-v{i}"
        d.fleet.observe(site, now - 5, 2.0, True)
        d.fleet.unit(site).running_since_s = now - 3600
    return d, sink


async def test_two_workers_on_one_activation_switch_each_unit_once(
    infra: Infra, redis: aioredis.Redis
) -> None:
    prefix = unique("w")
    now = datetime.now(tz=UTC).timestamp()
    (w1, s1), (w2, s2) = _dispatcher(infra, redis, prefix, now), _dispatcher(infra, redis, prefix, now)
    act = PoolActivated(
        activation_id=unique("act"),
        product=ReserveProduct.MFRR_ENERGY,
        direction=Direction.UP,
        power_mw=0.05,
        start=datetime.fromtimestamp(now, tz=UTC),
        end=datetime.fromtimestamp(now, tz=UTC) + timedelta(minutes=15),
        requested_at=datetime.fromtimestamp(now, tz=UTC),
    )
    await asyncio.gather(w1.on_activation(act), w2.on_activation(act))
    await w1.on_activation(act)  # redelivery: idempotent
    sites = [c.site_id for c in s1.commands + s2.commands]
    assert len(sites) >= 25  # 50 kW × (1 + margin) from 2 kW units
    assert len(sites) == len(set(sites))
