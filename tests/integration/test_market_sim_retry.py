"""market_sim on a real Redis with one injected failure: the retry (redelivery or next tick) still
settles the bid, indexes it for activation and publishes its activation."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError

from hybridpool_shared import topics
from hybridpool_shared.messages import BidSubmitted, Direction, PoolActivated, ReserveProduct
from hybridpool_shared.messages.base import Message, utc_key
from hybridpool_shared.messaging import Delivery
from hybridpool_shared.runtime import Service
from hybridpool_shared.timeutil import QUARTER
from hybridpool_shared.topics import TopicSpec
from services.market_sim import app
from services.market_sim.adapters import SETTLEMENT_KEY
from services.market_sim.app import Market
from services.market_sim.domain import MfrrQuarter
from services.market_sim.settings import MarketSimSettings
from tests.infra import Infra, unique

pytestmark = pytest.mark.integration
AREA = "DK1"
DELIVERY = Delivery(topics.MARKET_BIDS.name, 0, 0, None, 0)
WRITES = {"HSET", "HSETNX", "HDEL", "SET"}


class FakeService:
    """The parts of a Service the market uses: its Redis and a publish that can fail once."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self.published: list[tuple[str, Message]] = []
        self.fail_on: TopicSpec | None = None

    async def publish(self, spec: TopicSpec, message: Message) -> None:
        """Record a message, or raise once for the topic chosen to fail."""
        if spec is self.fail_on:
            self.fail_on = None
            raise RuntimeError(f"broker unavailable for {spec.name}")
        self.published.append((spec.name, message))


@pytest.fixture
async def client(infra: Infra) -> AsyncIterator[aioredis.Redis]:
    """The market's own Redis client, so failures injected into it touch nothing else."""
    own = aioredis.from_url(infra.redis_url)
    yield own
    await own.aclose()


@pytest.fixture
def quarter() -> datetime:
    """A quarter no other test (or earlier run) uses, so its activation index holds only this test's bid."""
    return datetime(2040, 1, 1, tzinfo=UTC) + QUARTER * secrets.randbelow(1_000_000)


def _market(client: aioredis.Redis, quarter: datetime) -> tuple[Market, FakeService]:
    service = FakeService(client)
    market = Market(cast(Service, service), MarketSimSettings())
    market.replay[(AREA, utc_key(quarter))] = MfrrQuarter(120.0, 50.0, up_mw=5.0, down_mw=0.0)
    return market, service


def _energy_bid(quarter: datetime) -> BidSubmitted:
    return BidSubmitted(
        bid_id=unique("mfrr"),
        area=AREA,
        product=ReserveProduct.MFRR_ENERGY,
        direction=Direction.UP,
        capacity_mw=1.0,
        price_eur_per_mwh=80.0,
        interval_start=quarter,
        interval_end=quarter + QUARTER,
        interval_minutes=15,
        submitted_at=quarter - timedelta(hours=1),
    )


def _lose_first_write_reply(client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis applies the client's first write (command or transaction), then its reply is lost."""
    armed = [True]

    def lost() -> None:
        if armed:
            armed.clear()
            raise RedisConnectionError("connection dropped after the write was applied")

    command = client.execute_command
    execute = Pipeline.execute

    async def execute_command(*args: Any, **options: Any) -> Any:
        reply = await command(*args, **options)
        if str(args[0]).upper() in WRITES:
            lost()
        return reply

    async def pipeline_execute(pipe: Pipeline, raise_on_error: bool = True) -> list[Any]:
        replies = await execute(pipe, raise_on_error)
        if pipe.connection_pool is client.connection_pool:
            lost()
        return replies

    monkeypatch.setattr(client, "execute_command", execute_command)
    monkeypatch.setattr(Pipeline, "execute", pipeline_execute)


async def test_redelivered_bid_is_settled_and_indexed_after_its_result_was_stored(
    client: aioredis.Redis, redis: aioredis.Redis, quarter: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    market, service = _market(client, quarter)
    bid = _energy_bid(quarter)
    with monkeypatch.context() as failing:
        _lose_first_write_reply(client, failing)
        with pytest.raises(RedisConnectionError):
            await market.on_bid(bid, DELIVERY)

    await market.on_bid(bid, DELIVERY)  # the redelivery

    line = await redis.hget(SETTLEMENT_KEY, f"bid:{bid.bid_id}")
    assert line is not None, "the redelivered bid was never settled"
    assert json.loads(line)["accepted"] is True
    assert [b.bid_id for b in await market.ledger.energy_bids(quarter)] == [bid.bid_id]
    assert [name for name, _ in service.published] == [topics.MARKET_RESULTS.name]


@pytest.mark.parametrize("failing", ["publish", "record_activation"])
async def test_activation_is_published_and_settled_on_the_tick_after_a_failure(
    client: aioredis.Redis,
    redis: aioredis.Redis,
    quarter: datetime,
    monkeypatch: pytest.MonkeyPatch,
    failing: str,
) -> None:
    monkeypatch.setattr(app, "utc_now", lambda: quarter + timedelta(minutes=1))
    market, service = _market(client, quarter)
    bid = _energy_bid(quarter)
    await market.on_bid(bid, DELIVERY)
    if failing == "publish":
        service.fail_on = topics.MARKET_ACTIVATIONS
    else:
        record = market.ledger.record_activation

        async def fail_once(activation: PoolActivated, revenue_eur: float) -> None:
            monkeypatch.setattr(market.ledger, "record_activation", record)
            raise RedisConnectionError("connection dropped")

        monkeypatch.setattr(market.ledger, "record_activation", fail_once)

    with pytest.raises((RuntimeError, RedisConnectionError)):
        await market.activate_due()
    await market.activate_due()  # the next tick
    await market.activate_due()  # and one more: drawn by now, so nothing is published again

    activations = [m for name, m in service.published if name == topics.MARKET_ACTIVATIONS.name]
    published = cast(list[PoolActivated], activations)
    assert [a.bid_id for a in published] == [bid.bid_id] * (2 if failing == "record_activation" else 1)
    assert published[0].power_mw == 1.0
    assert await redis.hget(SETTLEMENT_KEY, published[0].activation_id) is not None
