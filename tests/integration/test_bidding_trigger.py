"""A trigger is planned and published at least once: a failed or crashed run does not use it up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis

from hybridpool_shared import topics
from hybridpool_shared.messages import (
    BidSubmitted,
    ControlOption,
    Message,
    SiteLocation,
    SiteMasterDataChanged,
    SitePlanComputed,
)
from hybridpool_shared.runtime import build_service
from hybridpool_shared.timeutil import COPENHAGEN
from hybridpool_shared.topics import TopicSpec
from services.bidding.adapters import DONE_KEY, TriggerClaims
from services.bidding.app import INTRADAY, Planner
from services.bidding.settings import BiddingSettings
from tests.infra import Infra, unique

pytestmark = pytest.mark.integration
OWN_DB = 9  # a database of its own: the planner plans every registered site and live state in it
STALE_S = 600.0
T0 = 1_750_000_000.0
# 20:00 in Copenhagen: the intraday window is the 15 quarters to midnight, planned in well under a second
NOW = datetime(2025, 1, 15, 20, 0, tzinfo=COPENHAGEN)
Publish = Callable[[TopicSpec, Message], Coroutine[Any, Any, None]]


async def _state(redis: aioredis.Redis, trigger: str) -> str | None:
    raw = await redis.hget(DONE_KEY, trigger)
    return raw.decode() if isinstance(raw, bytes) else raw


async def test_a_trigger_is_claimed_once_until_done(redis: aioredis.Redis) -> None:
    claims, trigger, legacy = TriggerClaims(redis, STALE_S), unique("trigger"), unique("trigger")
    claim = await claims.claim(trigger, T0)
    assert claim is not None
    assert await claims.claim(trigger, T0 + 1) is None  # pending: another run is planning it
    assert await _state(redis, trigger) == claim
    await claims.finish(trigger)
    assert await claims.claim(trigger, T0 + 10 * STALE_S) is None  # done never goes stale
    assert await _state(redis, trigger) == "done"
    await redis.hset(DONE_KEY, legacy, "1")  # done before pending claims existed
    assert await claims.claim(legacy, T0 + 10 * STALE_S) is None


async def test_a_stale_pending_claim_is_taken_over_and_its_late_release_is_ignored(
    redis: aioredis.Redis,
) -> None:
    claims, trigger = TriggerClaims(redis, STALE_S), unique("trigger")
    crashed = await claims.claim(trigger, T0)
    assert crashed is not None
    assert await claims.claim(trigger, T0 + STALE_S - 1) is None
    taken = await claims.claim(trigger, T0 + STALE_S + 1)
    assert taken is not None
    assert taken != crashed
    assert not await claims.release(trigger, crashed)  # the slow original gives back only its own
    assert await _state(redis, trigger) == taken


async def test_a_released_claim_lets_the_next_run_through(redis: aioredis.Redis) -> None:
    claims, trigger = TriggerClaims(redis, STALE_S), unique("trigger")
    failed = await claims.claim(trigger, T0)
    assert failed is not None
    assert await claims.release(trigger, failed)
    assert await _state(redis, trigger) is None
    assert await claims.claim(trigger, T0 + 1) is not None


def _site(site_id: str) -> SiteMasterDataChanged:
    """A 500 kW heat pump in DK2: ten of them make mFRR energy bids of at least 1 MW."""
    return SiteMasterDataChanged(
        site_id=site_id,
        changed_at=datetime.now(UTC),
        location=SiteLocation(latitude_deg=55.7, longitude_deg=12.5, price_area="DK2"),
        hp_heat_power_kw=1500.0,
        hp_electric_power_kw=500.0,
        boiler_power_kw=5000.0,
        control_options=(ControlOption.SG_READY,),
    )


@pytest.fixture
async def planner(infra: Infra) -> AsyncIterator[Planner]:
    """A planner of its own Redis database holding ten registered sites; nothing is published yet."""
    base = infra.redis_url.rsplit("/", 1)[0] if infra.redis_url.count("/") > 2 else infra.redis_url
    settings = BiddingSettings(kafka_bootstrap="127.0.0.1:9", redis_url=f"{base}/{OWN_DB}")
    service = build_service("bidding", settings, produces=(topics.POOL_PLAN, topics.MARKET_BIDS))
    await service.redis.flushdb()
    try:
        created = Planner(service, settings)
        for i in range(10):
            await created.sites.upsert(_site(f"trigger-site-{i}"))
        yield created
    finally:
        await service.redis.flushdb()
        await service.redis.aclose()


def _recording(sent: list[Message], fail_bids_with: BaseException | None = None) -> Publish:
    """A publish that keeps what it was given and fails the first bid with the given error, if any."""
    failing = [fail_bids_with] if fail_bids_with is not None else []

    async def publish(spec: TopicSpec, message: Message) -> None:
        if spec == topics.MARKET_BIDS and failing:
            raise failing.pop()
        sent.append(message)

    return publish


@pytest.mark.parametrize("error", [ConnectionError("broker unavailable"), asyncio.CancelledError()])
async def test_a_run_that_fails_publishing_bids_is_planned_and_published_again(
    planner: Planner, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    """The same inputs (same trigger id) after a failed or cancelled run: the plan and bids go out."""
    sent: list[Message] = []
    monkeypatch.setattr(planner.service, "publish", _recording(sent, error))
    with pytest.raises(type(error)):
        await planner.run(INTRADAY, NOW)
    trigger = next(m.plan_id for m in sent if isinstance(m, SitePlanComputed))
    sent.clear()

    summary = await planner.run(INTRADAY, NOW)
    assert summary is not None
    assert summary["plan_id"] == trigger
    bids = [m for m in sent if isinstance(m, BidSubmitted)]
    assert summary["energy_bids"] > 0
    assert len({b.bid_id for b in bids}) == summary["energy_bids"]
    assert {b.plan_id for b in bids} == {trigger}
    assert await _state(planner.service.redis, trigger) == "done"

    sent.clear()
    assert await planner.run(INTRADAY, NOW) == summary  # done: answered from Redis, nothing republished
    assert sent == []


async def test_a_crashed_runs_claim_holds_the_trigger_until_it_is_stale(
    planner: Planner, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[Message] = []
    monkeypatch.setattr(planner.service, "publish", _recording(sent))
    redis, trigger = planner.service.redis, unique("crashed")
    assert await planner.claims.claim(trigger, time.time())  # a run planning it right now, elsewhere
    assert await planner.run(INTRADAY, NOW, trigger) is None
    assert sent == []

    await redis.hdel(DONE_KEY, trigger)
    assert await planner.claims.claim(trigger, time.time() - planner.settings.claim_stale_s() - 60)
    summary = await planner.run(INTRADAY, NOW, trigger)
    assert summary is not None
    assert summary["plan_id"] == trigger
    assert sum(isinstance(m, BidSubmitted) for m in sent) == summary["energy_bids"] > 0
    assert await _state(redis, trigger) == "done"
