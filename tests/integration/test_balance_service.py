"""The balance service process on the real broker and Redis: prices in → balance prices out, and
republished when COP inputs (outdoor temperature) or tariffs change; HTTP reads per site and fleet."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from aiokafka import ConsumerRecord

from hybridpool_shared import topics
from hybridpool_shared.domain.cop import CopModel, HeatingCurve
from hybridpool_shared.messages import (
    AggregateQuality,
    BalancePriceComputed,
    ControlOption,
    DayAheadPriceIngested,
    HeatSource,
    QuarterAggregated,
    SiteLocation,
    SiteMasterDataChanged,
)
from hybridpool_shared.messaging import publish
from hybridpool_shared.timeutil import QUARTER, floor_quarter, utc_now
from tests.infra import Infra, RunningService, running, unique, wait_for_records

pytestmark = pytest.mark.integration
AREA = "SE4"  # an area no other test prices, so only this test's prices reach these sites


@pytest.fixture(scope="module")
def balance(infra: Infra) -> Iterator[RunningService]:
    with running("balance", infra, {"BALANCE_REFIT_EVERY_QUARTERS": "1"}) as svc:
        yield svc


def _site(site_id: str, efficiency: float = 0.9) -> SiteMasterDataChanged:
    return SiteMasterDataChanged(
        site_id=site_id,
        changed_at=utc_now(),
        location=SiteLocation(latitude_deg=55.6, longitude_deg=13.0, price_area=AREA),
        hp_heat_power_kw=5.0,
        hp_electric_power_kw=1.6,
        boiler_efficiency=efficiency,
        control_options=(ControlOption.SG_READY,),
    )


def _prices(start, spots: list[float]) -> list[DayAheadPriceIngested]:  # type: ignore[no-untyped-def]
    return [
        DayAheadPriceIngested(
            area=AREA,
            interval_start=start + i * QUARTER,
            interval_end=start + (i + 1) * QUARTER,
            interval_minutes=15,
            price_eur_per_mwh=spot,
            source="test",
            ingested_at=utc_now(),
        )
        for i, spot in enumerate(spots)
    ]


async def _broker(infra: Infra):  # type: ignore[no-untyped-def]
    from faststream.kafka import KafkaBroker

    broker = KafkaBroker(infra.kafka_bootstrap)
    await broker.connect()
    return broker


def _of(site_id: str, cop: float | None = None):  # type: ignore[no-untyped-def]
    def match(record: ConsumerRecord[bytes, bytes]) -> bool:
        data = json.loads(record.value)
        return data["site_id"] == site_id and (cop is None or data["cop"] == cop)

    return match


async def _wait_http(url: str, site_id: str) -> None:
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(timeout=5) as client:
        while (await client.get(f"{url}/sites/{site_id}/cop-model")).status_code != 200 or (
            await client.get(f"{url}/sites/{site_id}/balance-prices")
        ).status_code == 404:
            assert time.monotonic() < deadline, "site never reached the balance service"
            await asyncio.sleep(0.2)


async def test_prices_become_balance_prices_and_cop_changes_republish(
    infra: Infra, balance: RunningService
) -> None:
    site_id = unique("bal")
    tomorrow = floor_quarter(utc_now()) + timedelta(days=1)
    broker = await _broker(infra)
    try:
        await publish(broker, topics.SITES_REGISTRY, _site(site_id))
        await _wait_http(balance.url, site_id)
        for price in _prices(tomorrow, [20.0, 300.0, 90.0, 95.0]):
            await publish(broker, topics.PRICES_DAY_AHEAD, price)
        first = await wait_for_records(
            infra.kafka_bootstrap, topics.SITES_BALANCE_PRICE.name, _of(site_id), count=4
        )
        results = sorted(
            (BalancePriceComputed.from_json_bytes(r.value) for r in first), key=lambda m: m.interval_start
        )
        gas_heat = 0.80 / (11.0 * 0.9) * 1000
        assert [r.cop for r in results] == [3.0] * 4  # nothing known about the site yet
        assert results[0].balance_price_eur_per_mwh == pytest.approx(3.0 * gas_heat - 135.0, abs=1e-3)
        assert [r.preferred_source for r in results[:2]] == [HeatSource.HEAT_PUMP, HeatSource.GAS]

        # A cold quarter measured at the site: the COP forecast drops, so the prices are republished.
        now = floor_quarter(utc_now())
        cold = QuarterAggregated(
            site_id=site_id,
            interval_start=now - QUARTER,
            interval_end=now,
            interval_minutes=15,
            quality=AggregateQuality.MEASURED,
            readings=15,
            cop_measured=2.1,
            outdoor_temp_mean_c=-8.0,
            hp_running_share=1.0,
        )
        await publish(broker, topics.SITES_TELEMETRY_QUARTER, cold)
        again = await wait_for_records(
            infra.kafka_bootstrap,
            topics.SITES_BALANCE_PRICE.name,
            lambda r: _of(site_id)(r) and json.loads(r.value)["cop"] != 3.0,
            count=4,
        )
        cops = {BalancePriceComputed.from_json_bytes(r.value).cop for r in again}
        assert len(cops) == 1
        assert cops.pop() < 2.6  # −8 °C with the type-default model
    finally:
        await broker.stop()

    async with httpx.AsyncClient(base_url=balance.url, timeout=10) as client:
        read = (
            await client.get(
                f"/sites/{site_id}/balance-prices",
                params={"start": tomorrow.isoformat(), "end": (tomorrow + 4 * QUARTER).isoformat()},
            )
        ).json()
        assert [i["spot_price_eur_per_mwh"] for i in read["intervals"]] == [20.0, 300.0, 90.0, 95.0]
        assert read["cop_model"]["fitted"] is False
        model = (await client.get(f"/sites/{site_id}/cop-model")).json()
        assert model["latest_outdoor"]["temp_c"] == -8.0
        metrics = (await client.get("/metrics")).text
        assert "hybridpool_balance_prices_published_total" in metrics


async def test_tariff_change_republishes_and_portfolio_summary(infra: Infra, balance: RunningService) -> None:
    site_id = unique("tariff")
    tomorrow = floor_quarter(utc_now()) + timedelta(days=1, hours=6)
    broker = await _broker(infra)
    try:
        await publish(broker, topics.SITES_REGISTRY, _site(site_id, efficiency=1.0))
        await _wait_http(balance.url, site_id)
        for price in _prices(tomorrow, [50.0, 60.0]):
            await publish(broker, topics.PRICES_DAY_AHEAD, price)
        await wait_for_records(infra.kafka_bootstrap, topics.SITES_BALANCE_PRICE.name, _of(site_id), count=2)
    finally:
        await broker.stop()

    version = {
        "scope": site_id,
        "effective_from": (utc_now() - timedelta(days=1)).isoformat(),
        "gas_price_eur_per_m3": 1.10,
        "gas_kwh_per_m3": 11.0,
        "electricity_adders_eur_per_mwh": 100.0,
    }
    async with httpx.AsyncClient(base_url=balance.url, timeout=30) as client:
        current = (await client.get("/tariffs")).json()
        assert (await client.put("/tariffs", json=[*current, version])).status_code == 200
        expected = round(3.0 * 1.10 / 11.0 * 1000 - 100.0, 4)
        records = await wait_for_records(
            infra.kafka_bootstrap,
            topics.SITES_BALANCE_PRICE.name,
            lambda r: (
                _of(site_id)(r)
                and json.loads(r.value)["balance_price_eur_per_mwh"] == expected
                and json.loads(r.value)["spot_price_eur_per_mwh"] in (50.0, 60.0)
            ),
            count=2,
        )
        assert {BalancePriceComputed.from_json_bytes(r.value).preferred_source for r in records} == {
            HeatSource.HEAT_PUMP
        }
        bad = await client.put("/tariffs", json=[{**version, "gas_price_eur_per_m3": -1}])
        assert bad.status_code == 422
        summary = (
            await client.get(
                "/portfolio/summary",
                params={
                    "area": AREA,
                    "start": tomorrow.isoformat(),
                    "end": (tomorrow + 2 * QUARTER).isoformat(),
                },
            )
        ).json()
        assert summary["sites"] >= 1
        assert [q["spot_eur_per_mwh"] for q in summary["per_quarter"]] == [50.0, 60.0]
        assert all(q["prefer_gas"] + q["prefer_heat_pump"] == q["sites"] for q in summary["per_quarter"])
        assert set(summary["balance_price_percentiles_eur_per_mwh"]) == {"p5", "p25", "p50", "p75", "p95"}


async def test_cop_model_is_fitted_from_the_sites_own_quarters(infra: Infra, balance: RunningService) -> None:
    site_id = unique("fit")
    truth = CopModel(efficiency=0.45, curve=HeatingCurve(slope=1.3))
    now = floor_quarter(utc_now())
    outdoor = [-6.0 + 16.0 * (i % 24) / 23 for i in range(120)]
    broker = await _broker(infra)
    try:
        await publish(broker, topics.SITES_REGISTRY, _site(site_id))
        for i, temp in enumerate(outdoor):
            start = now - (120 - i) * QUARTER
            aggregate = QuarterAggregated(
                site_id=site_id,
                interval_start=start,
                interval_end=start + QUARTER,
                interval_minutes=15,
                quality=AggregateQuality.MEASURED,
                readings=15,
                cop_measured=round(float(truth.cop(temp)), 3),
                outdoor_temp_mean_c=temp,
                hp_running_share=0.9,
            )
            await publish(broker, topics.SITES_TELEMETRY_QUARTER, aggregate)
    finally:
        await broker.stop()

    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(base_url=balance.url, timeout=10) as client:
        while not (model := (await client.get(f"/sites/{site_id}/cop-model")).json()["model"])["fitted"]:
            assert time.monotonic() < deadline, "no fit after 120 quarters"
            await asyncio.sleep(0.3)
        while model["samples"] < 120 and time.monotonic() < deadline:
            await asyncio.sleep(0.3)
            model = (await client.get(f"/sites/{site_id}/cop-model")).json()["model"]
    assert model["samples"] >= 96
    assert model["efficiency"] == pytest.approx(0.45, abs=0.02)
    assert model["curve"]["slope"] == pytest.approx(1.3, abs=0.15)
    assert model["r2"] > 0.95
