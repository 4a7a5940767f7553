"""End to end on the real broker and Redis: a message flows through a real service process,
and malformed input on every consumed topic of every service is dead-lettered, not lost."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
import redis.asyncio as aioredis

from hybridpool_cli.supervisor import SERVICES
from hybridpool_shared import topics
from hybridpool_shared.messages import (
    BalancePriceComputed,
    ControlOption,
    DayAheadPriceIngested,
    DeadLettered,
    HeatSource,
    SiteLocation,
    SiteMasterDataChanged,
)
from hybridpool_shared.messaging import publish
from hybridpool_shared.timeutil import floor_quarter, utc_now
from tests.infra import Infra, RunningService, produce, start_service, unique, wait_for_records

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def platform(private_infra: Infra) -> Iterator[dict[str, RunningService]]:
    """Every service as its own process, on a broker of this module's own: the malformed
    messages published here on every topic must not reach other tests' readers."""
    started: dict[str, RunningService] = {}
    try:
        for name in SERVICES:
            started[name] = start_service(name, private_infra, {"SITE_SIM_SITES": "20"})
        yield started
    finally:
        for svc in started.values():
            svc.process.stop()


def _site(site_id: str) -> SiteMasterDataChanged:
    return SiteMasterDataChanged(
        site_id=site_id,
        changed_at=utc_now(),
        location=SiteLocation(latitude_deg=56.1, longitude_deg=10.2, price_area="DK1"),
        hp_heat_power_kw=10.0,
        hp_electric_power_kw=3.0,
        boiler_power_kw=30.0,
        boiler_efficiency=0.9,
        control_options=(ControlOption.SG_READY,),
    )


def _price(spot: float) -> DayAheadPriceIngested:
    # A month ahead: no replayed price of price_ingest can share this interval.
    start = floor_quarter(utc_now()) + timedelta(days=30)
    return DayAheadPriceIngested(
        area="DK1",
        interval_start=start,
        interval_end=start + timedelta(minutes=15),
        interval_minutes=15,
        price_eur_per_mwh=spot,
        source="test",
        ingested_at=utc_now(),
    )


async def _wait_for_site(redis_url: str, site_id: str) -> None:
    client = aioredis.from_url(redis_url)
    try:
        async with asyncio.timeout(30):
            while not await client.hexists("balance:sites", site_id):
                await asyncio.sleep(0.1)
    finally:
        await client.aclose()


async def _broker(infra: Infra):  # type: ignore[no-untyped-def]
    from faststream.kafka import KafkaBroker

    broker = KafkaBroker(infra.kafka_bootstrap)
    await broker.connect()
    return broker


async def test_day_ahead_price_becomes_balance_prices(
    private_infra: Infra, platform: dict[str, RunningService]
) -> None:
    infra = private_infra
    site_id = unique("villa")
    broker = await _broker(infra)
    try:
        await publish(broker, topics.SITES_REGISTRY, _site(site_id))
        await _wait_for_site(infra.redis_url, site_id)
        # A malformed price first: the consumer must park it and go on with the next one.
        await produce(infra.kafka_bootstrap, topics.PRICES_DAY_AHEAD.name, b'{"area": "DK1"}')
        price = _price(spot=120.0)
        await publish(broker, topics.PRICES_DAY_AHEAD, price)
    finally:
        await broker.stop()

    records = await wait_for_records(
        infra.kafka_bootstrap,
        topics.SITES_BALANCE_PRICE.name,
        lambda r: (
            BalancePriceComputed.from_json_bytes(r.value).site_id == site_id
            and BalancePriceComputed.from_json_bytes(r.value).interval_start == price.interval_start
        ),
    )
    result = BalancePriceComputed.from_json_bytes(records[0].value)
    gas_heat = 0.80 / (11.0 * 0.9) * 1000  # the service's default tariff, this site's boiler
    assert result.balance_price_eur_per_mwh == pytest.approx(3.0 * gas_heat - 135.0, abs=1e-3)
    assert result.preferred_source is HeatSource.GAS  # 120 EUR/MWh is above ~107 EUR/MWh
    assert result.spot_price_eur_per_mwh == 120.0


def _consumed_topics(svc: RunningService) -> list[str]:
    doc = httpx.get(f"{svc.url}/asyncapi.json", timeout=5).json()
    return sorted(
        op["channel"]["$ref"].split("/")[-1] for op in doc["operations"].values() if op["action"] == "receive"
    )


def _dead_letters(svc: RunningService, topic: str) -> float:
    text = httpx.get(f"{svc.url}/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("hybridpool_dead_letters_total{") and f'topic="{topic}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _cases() -> list[tuple[str, str]]:
    return [(name, spec.name) for name in SERVICES for spec in topics.CATALOGUE]


async def test_every_consumed_topic_dead_letters_malformed_input(
    private_infra: Infra, platform: dict[str, RunningService]
) -> None:
    infra = private_infra
    pairs = [(name, topic) for name, svc in platform.items() for topic in _consumed_topics(svc)]
    assert len({name for name, _ in pairs}) >= 6, "most services consume something"
    marker = unique("garbage")
    before = {(n, t): _dead_letters(platform[n], t) for n, t in pairs}
    for topic in {t for _, t in pairs}:
        await produce(infra.kafka_bootstrap, topic, f'{{"{marker}": "not a {topic}"}}'.encode())

    for name, topic in pairs:
        group = f"hybridpool.{name}.{topic}"
        records = await wait_for_records(
            infra.kafka_bootstrap,
            f"{topic}.dlq",
            lambda r, g=group: marker.encode() in r.value and json.loads(r.value)["consumer_group"] == g,
        )
        letter = DeadLettered.from_json_bytes(records[0].value)
        assert letter.error_kind == "validation"
        assert "Field required" in letter.error or "Extra inputs" in letter.error
        assert marker in (letter.payload_text or "")
        assert _dead_letters(platform[name], topic) > before[(name, topic)]
