"""Bidding's Redis-backed inputs: the price book survives a restart, reaction shares per product."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
import redis.asyncio as aioredis

from hybridpool_shared import topics
from hybridpool_shared.domain.reaction import PhaseStats, ReactionProfile, profile_key
from hybridpool_shared.messages import BalancePriceComputed, DayAheadPriceIngested, ReservePriceIngested
from hybridpool_shared.timeutil import floor_quarter, utc_now
from services.bidding.adapters import Book, BookStore, SiteStore, area_product, full_activation_s
from services.bidding.settings import BiddingSettings
from tests.infra import Infra, poll_json, produce, running, unique

pytestmark = pytest.mark.integration
HOUR = timedelta(hours=1)


def _spot(start: datetime, eur: float, area: str = "DK2") -> DayAheadPriceIngested:
    return DayAheadPriceIngested(
        area=area,
        interval_start=start,
        interval_end=start + HOUR,
        interval_minutes=60,
        price_eur_per_mwh=eur,
        source="test",
        ingested_at=utc_now(),
    )


def _reserve(start: datetime, eur: float) -> ReservePriceIngested:
    return ReservePriceIngested(
        area="DK2",
        product="FCR-N",
        interval_start=start,
        interval_end=start + HOUR,
        interval_minutes=60,
        price_eur_per_mw_per_h=eur,
        source="test",
        ingested_at=utc_now(),
    )


def _balance(site_id: str, start: datetime, eur: float, cop: float) -> BalancePriceComputed:
    return BalancePriceComputed(
        site_id=site_id,
        area="DK2",
        interval_start=start,
        interval_end=start + timedelta(minutes=15),
        interval_minutes=15,
        cop=cop,
        balance_price_eur_per_mwh=eur,
    )


async def test_a_new_book_restores_every_priced_quarter_and_keeps_newer_messages(
    redis: aioredis.Redis,
) -> None:
    start = floor_quarter(utc_now()) + HOUR
    site = unique("book-site")
    book, store = Book(), BookStore(redis)
    book.add_spot(_spot(start, 41.5))
    book.add_reserve(_reserve(start, 17.25))
    book.add_balance(_balance(site, start, 123.4, 3.1))
    assert await store.flush(book) == 4 + 4 + 1
    assert await store.flush(book) == 0  # written once

    restarted = Book()
    restarted.add_spot(_spot(start, 99.0))  # a message consumed before the copy was read wins
    assert await store.load(restarted, utc_now()) >= 9
    ts = int(start.timestamp())
    assert restarted.spot["DK2"][ts] == 99.0
    assert restarted.spot["DK2"][ts + 900] == 99.0
    assert restarted.reserve[("DK2", "fcr_n")][ts + 2700] == 17.25
    assert restarted.balance[site][ts] == (123.4, 3.1)
    assert restarted.take_pending()[0].value == "99.0"  # only messages are journalled, not restores


async def test_the_copy_expires_after_its_quarters_are_old(redis: aioredis.Redis) -> None:
    start = floor_quarter(utc_now()) + HOUR
    book, store = Book(), BookStore(redis)
    book.add_balance(_balance(unique("book-site"), start, 80.0, 2.5))
    await store.flush(book)
    day = int(start.timestamp()) // 86400
    expires_in_s = await redis.ttl(f"bidding:book:balance:{day}")
    assert 86400 < expires_in_s <= 4 * 86400


async def test_a_restarted_bidding_service_plans_with_the_prices_it_had(infra: Infra) -> None:
    """Offsets are committed, so a restart reads no old price again: the Redis copy must bring them back."""
    tomorrow = floor_quarter(datetime.now(tz=UTC)).replace(minute=0) + timedelta(days=1)
    prices = [_spot(tomorrow + h * HOUR, 60.0 + h, area="DK1") for h in range(6)]
    env = {"BIDDING_STARTUP_DELAY_S": "86400"}
    async with httpx.AsyncClient(timeout=30.0) as client:
        with running("bidding", infra, env) as first:
            for p in prices:
                await produce(
                    infra.kafka_bootstrap, topics.PRICES_DAY_AHEAD.name, p.to_json_bytes(), p.kafka_key()
                )
            before = await poll_json(
                client, f"{first.url}/inputs", lambda b: b["spot_quarters_next_48h"].get("DK1", 0) >= 24
            )
        with running("bidding", infra, env) as second:
            after = (await client.get(f"{second.url}/inputs")).json()
    assert after["spot_quarters_next_48h"]["DK1"] >= before["spot_quarters_next_48h"]["DK1"]


def _profile(site_id: str, p90_s: float) -> ReactionProfile:
    stats = PhaseStats(median_s=p90_s, p90_s=p90_s, count=10)
    return ReactionProfile(
        site_id=site_id,
        samples=10,
        never_responded_share=0.0,
        ack_s=stats,
        first_change_s=stats,
        reached_50_s=stats,
        reached_90_s=stats,
        stable_s=stats,
        updated_at=utc_now(),
    )


async def test_response_shares_are_judged_against_the_product_of_each_sites_area(
    redis: aioredis.Redis,
) -> None:
    """FCR in DK1 wants 100 % in 30 s, FCR-N in DK2 in 150 s: the same 60 s site is half as useful in DK1."""
    dk1, dk2 = unique("dk1-site"), unique("dk2-site")
    new1, new2 = unique("dk1-new"), unique("dk2-new")
    for site_id in (dk1, dk2):
        await redis.hset(profile_key(site_id), mapping=_profile(site_id, 60.0).to_redis())  # type: ignore[arg-type]
    areas = {dk1: "DK1", dk2: "DK2", new1: "DK1", new2: "DK2"}
    shares = await SiteStore(redis).responses(areas, BiddingSettings().assumed_response())
    assert shares == {dk1: 0.5, dk2: 1.0, new1: 0.0, new2: 1.0}
    assert full_activation_s(area_product("DK1")) == 30.0
    assert full_activation_s(area_product("DK2")) == 150.0
