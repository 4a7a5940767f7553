"""The price_ingest process replaying the bundled sample: today's and tomorrow's prices appear,
flagged as shifted sample data, in Redis, over HTTP, on the topic and in the metrics."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta

import httpx
import pytest

from hybridpool_shared import topics
from hybridpool_shared.messages import DayAheadPriceIngested
from hybridpool_shared.timeutil import local_day_bounds, utc_now
from services.price_ingest.domain.schedule import expected_intervals, local_today
from tests.fixtures.prices.eds_server import FakeEds, serving
from tests.infra import Infra, running, unique
from tests.integration.test_price_ingest import read_all

pytestmark = pytest.mark.integration


async def _wait_for_curve(client: httpx.AsyncClient, params: dict[str, str], count: int) -> list[dict]:  # type: ignore[type-arg]
    deadline = time.monotonic() + 60
    while True:
        body = (await client.get("/prices/day_ahead", params=params)).json()
        prices = body["curves"].get("day_ahead:DK1:spot:none", [])
        if len(prices) >= count or time.monotonic() > deadline:
            return prices  # type: ignore[no-any-return]
        await asyncio.sleep(0.3)


async def test_replay_publishes_today_and_tomorrow_flagged_as_shifted(infra: Infra) -> None:
    since = utc_now()
    today = local_today(since)
    tomorrow = today + timedelta(days=1)
    start, end = local_day_bounds(today)[0], local_day_bounds(tomorrow)[1]
    expected = expected_intervals(today, 15) + expected_intervals(tomorrow, 15)
    env = {"PRICE_INGEST_REDIS_NAMESPACE": unique("svc") + ":"}
    with running("price_ingest", infra, env) as svc:
        async with httpx.AsyncClient(base_url=svc.url, timeout=5) as client:
            params = {"area": "DK1", "from": start.isoformat(), "to": end.isoformat()}
            prices = await _wait_for_curve(client, params, expected)
            assert len(prices) == expected
            assert all(p["source"].startswith("replay-shifted:DayAheadPrices:") for p in prices)
            assert prices[0]["interval_start"] == start.strftime("%Y-%m-%dT%H:%M:%SZ")
            reserve = (await client.get("/prices/reserve", params={"area": "DK2", "product": "fcr_n"})).json()
            assert reserve["curves"]["reserve:DK2:fcr_n:symmetric"]
            bad = await client.get("/prices/reserve", params={"area": "DK2"})
            assert bad.status_code == 422
            metrics = (await client.get("/metrics")).text
    assert 'price_ingest_records_total{dataset="DayAheadPrices",outcome="published"}' in metrics
    assert 'price_ingest_last_success_timestamp_seconds{dataset="DayAheadPrices"}' in metrics
    on_topic = {
        msg.kafka_key()
        for raw in await read_all(infra.kafka_bootstrap, topics.PRICES_DAY_AHEAD.name, 6)
        if (msg := DayAheadPriceIngested.from_json_bytes(raw)).ingested_at >= since
        and msg.area == "DK1"
        and msg.source.startswith("replay-shifted:")
        and start <= msg.interval_start < end
    }
    assert len(on_topic) == expected


async def _wait_for_requests(eds: FakeEds, dataset: str) -> list[dict[str, str]]:
    deadline = time.monotonic() + 30
    while not eds.requests_for(dataset) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    return eds.requests_for(dataset)


async def test_api_mode_polls_every_dataset_of_today(infra: Infra) -> None:
    today = local_today(utc_now())
    start, end = local_day_bounds(today)
    env = {
        "PRICE_INGEST_SOURCE": "api",
        "PRICE_INGEST_REDIS_NAMESPACE": unique("api") + ":",
        "PRICE_INGEST_DAY_AHEAD_RETRY_S": "3600",
    }
    with (
        serving(FakeEds()) as eds,
        running("price_ingest", infra, {**env, "PRICE_INGEST_API_BASE_URL": eds.url}),
    ):
        day_ahead = await _wait_for_requests(eds, "DayAheadPrices")
        assert (day_ahead[0]["start"], day_ahead[0]["end"]) == (
            start.strftime("%Y-%m-%dT%H:%M"),
            end.strftime("%Y-%m-%dT%H:%M"),
        )
        assert json.loads(day_ahead[0]["filter"]) == {"PriceArea": ["DK1", "DK2"]}
        for name in ("ImbalancePrice", "MfrrEnergyActivationMarket", "FcrDK1", "MfrrCapacityMarket"):
            assert await _wait_for_requests(eds, name), f"{name} was never fetched"
        fcr = await _wait_for_requests(eds, "FcrNdDK2")
        assert json.loads(fcr[0]["filter"]) == {"PriceArea": ["DK1", "DK2"], "AuctionType": ["Total"]}
