"""Bidding and market simulator as real processes on the real broker and Redis.

Master data and live states go in, symmetric bids come out on market.bids, the market_sim process
clears them on market.results, the bidding read API shows bids, results and pool sizing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
import redis.asyncio as aioredis

from hybridpool_shared import topics
from hybridpool_shared.messages import (
    BidCleared,
    BidSubmitted,
    ControlOption,
    Direction,
    FrequencyMeasured,
    PoolActivated,
    ReserveProduct,
    SiteLocation,
    SiteMasterDataChanged,
    SitePoolMembershipChanged,
)
from hybridpool_shared.sitestate import STATE_INDEX_KEY, GatewayStatus, SiteLiveState, state_key
from hybridpool_shared.timeutil import floor_quarter, utc_now
from tests.infra import Infra, RunningService, poll_json, produce, start_service, unique, wait_for_records

pytestmark = pytest.mark.integration
SITES = 240


@pytest.fixture(scope="module")
def services(infra: Infra) -> Iterator[dict[str, RunningService]]:
    """bidding (no periodic planning: the test triggers it) and market_sim."""
    started: dict[str, RunningService] = {}
    try:
        started["bidding"] = start_service(
            "bidding", infra, {"BIDDING_STARTUP_DELAY_S": "86400", "BIDDING_TIME_LIMIT_S": "10"}
        )
        replay = infra.data_dir / f"{unique('mfrr-replay')}.json"
        replay.write_text(json.dumps(_replay_records()))
        env = {
            "MARKET_SIM_SEED": "7",
            "MARKET_SIM_MFRR_REPLAY_FILE": str(replay),
            "MARKET_SIM_ACTIVATION_TICK_S": "0.5",
        }
        started["market_sim"] = start_service("market_sim", infra, env)
        yield started
    finally:
        for svc in started.values():
            svc.process.stop()


def _replay_records() -> list[dict[str, object]]:
    """MfrrEnergyActivationMarket-like records: DK1 activates 76 MW up in the coming quarters."""
    first = floor_quarter(utc_now())
    return [
        {
            "TimeUTC": (first + timedelta(minutes=15 * q)).strftime("%Y-%m-%dT%H:%M:%S"),
            "PriceArea": "DK1",
            "mFRRSAUpEUR": 254.17,
            "mFRRSADownEUR": 171.0,
            "TotalmFRRUpMW": 76,
            "TotalmFRRDownMW": None,
            "mFRROfferedUpMW": 381,
            "mFRROfferedDownMW": 501,
        }
        for q in range(16)
    ]


def _master(site_id: str) -> SiteMasterDataChanged:
    return SiteMasterDataChanged(
        site_id=site_id,
        changed_at=utc_now(),
        location=SiteLocation(latitude_deg=55.7, longitude_deg=12.5, price_area="DK2"),
        hp_heat_power_kw=12.0,
        hp_electric_power_kw=5.0,
        boiler_power_kw=33.0,
        control_options=(ControlOption.SG_READY,),
        heated_area_m2=160.0,
    )


def _state(site_id: str, index: int) -> SiteLiveState:
    now = utc_now()
    running = index % 2 == 0
    return SiteLiveState(
        site_id=site_id,
        measured_at=now,
        electric_power_kw=5.0 if running else 0.0,
        meter_reading_kwh=100.0,
        hp_running=running,
        boiler_running=not running,
        sg_ready_state=2,
        indoor_temp_c=21.0,
        outdoor_temp_c=6.0,
        running_since=now if running else None,
        stopped_since=None if running else now,
        gateway_status=GatewayStatus.OFFLINE if index % 10 == 9 else GatewayStatus.OK,
        updated_at=now,
    )


async def _publish_fleet(infra: Infra, prefix: str) -> list[str]:
    ids = [f"{prefix}-{i:04d}" for i in range(SITES)]
    client = aioredis.from_url(infra.redis_url)
    try:
        for i, site_id in enumerate(ids):
            await client.hset(state_key(site_id), mapping=_state(site_id, i).to_redis())
            await client.sadd(STATE_INDEX_KEY, site_id)
    finally:
        await client.aclose()
    await asyncio.gather(
        *(
            produce(infra.kafka_bootstrap, topics.SITES_REGISTRY.name, _master(s).to_json_bytes(), s.encode())
            for s in ids
        )
    )
    return ids


async def test_fleet_gets_symmetric_bids_cleared_by_market_sim(
    infra: Infra, services: dict[str, RunningService]
) -> None:
    """Published master data + live states → bids ≥ 0.3 MW → results from market_sim → read API."""
    bidding, market = services["bidding"].url, services["market_sim"].url
    ids = await _publish_fleet(infra, unique("bidfleet"))
    async with httpx.AsyncClient(timeout=120.0) as client:
        await poll_json(client, f"{bidding}/inputs", lambda b: b["registered_sites"] >= SITES)
        trigger = unique("da-test")
        summary = (await client.post(f"{bidding}/plan/run", params={"trigger": trigger})).json()
        assert summary["plan_id"] == trigger
        assert summary["fallback"] is False, summary["reason"]
        capacity = summary["capacity_bids"]
        assert capacity, "the fleet should offer symmetric capacity"
        assert all(
            b["capacity_mw"] >= 0.3 and b["product"] == "fcr_n" for b in capacity if b["area"] == "DK2"
        )

        bids = await wait_for_records(
            infra.kafka_bootstrap,
            topics.MARKET_BIDS.name,
            lambda r: BidSubmitted.from_json_bytes(r.value or b"").plan_id == trigger,
            count=len(capacity),
        )
        capacity_ids = {
            b.bid_id
            for b in (BidSubmitted.from_json_bytes(r.value or b"") for r in bids)
            if b.product.value == "fcr_n"
        }
        assert capacity_ids
        results = await wait_for_records(
            infra.kafka_bootstrap,
            topics.MARKET_RESULTS.name,
            lambda r: BidCleared.from_json_bytes(r.value or b"").bid_id in capacity_ids,
            count=len(capacity_ids),
        )
        cleared = [BidCleared.from_json_bytes(r.value or b"") for r in results]
        assert any(c.accepted and c.accepted_mw >= 0.3 for c in cleared)

        seen = await poll_json(
            client,
            f"{bidding}/results",
            lambda rows: {r["bid_id"] for r in rows} >= capacity_ids,  # type: ignore[attr-defined]
        )
        assert seen
        plans = await wait_for_records(
            infra.kafka_bootstrap,
            topics.POOL_PLAN.name,
            lambda r: json.loads(r.value or b"{}").get("plan_id") == trigger and r.key in {ids[0].encode()},
        )
        assert len(json.loads(plans[0].value or b"{}")["hp_on"]) == summary["quarters"]
        sizing = (await client.get(f"{bidding}/pool/sizing")).json()
        assert sizing["plan_id"] == trigger
        assert sizing["sites_needed_median_quarter"] > 0
        settlement = (await client.get(f"{market}/settlement")).json()
        assert any(line["bid_id"] in capacity_ids and line["revenue_eur"] > 0 for line in settlement["lines"])

        again = (await client.post(f"{bidding}/plan/run", params={"trigger": trigger})).json()
        assert again["plan_id"] == trigger
        assert again["total_s"] == summary["total_s"]  # the same job's summary, not a new solve


async def test_market_sim_emits_frequency(infra: Infra, services: dict[str, RunningService]) -> None:
    """grid.frequency carries 1 s samples near 50 Hz from the running simulator."""
    since = utc_now() - timedelta(seconds=2)
    records = await wait_for_records(
        infra.kafka_bootstrap,
        topics.GRID_FREQUENCY.name,
        lambda r: FrequencyMeasured.from_json_bytes(r.value or b"").measured_at >= since,
        count=3,
        timeout=30,
    )
    samples = [FrequencyMeasured.from_json_bytes(r.value or b"") for r in records]
    assert all(49.0 < s.frequency_hz < 51.0 for s in samples)
    assert len({s.measured_at for s in samples}) >= 2


async def test_market_sim_activates_an_accepted_mfrr_bid_from_replayed_volumes(
    infra: Infra, services: dict[str, RunningService]
) -> None:
    """An in-merit up bid for a quarter where the replay activated 76 MW is activated and settled."""
    now = utc_now()
    quarter = floor_quarter(now)
    if quarter + timedelta(minutes=15) - now < timedelta(seconds=90):
        quarter += timedelta(minutes=15)
    bid = BidSubmitted(
        bid_id=unique("mfrr-up"),
        area="DK1",
        product=ReserveProduct.MFRR_ENERGY,
        direction=Direction.UP,
        capacity_mw=1.0,
        price_eur_per_mwh=150.0,
        interval_start=quarter,
        interval_end=quarter + timedelta(minutes=15),
        interval_minutes=15,
        submitted_at=now,
    )
    await produce(infra.kafka_bootstrap, topics.MARKET_BIDS.name, bid.to_json_bytes(), bid.kafka_key())
    results = await wait_for_records(
        infra.kafka_bootstrap,
        topics.MARKET_RESULTS.name,
        lambda r: BidCleared.from_json_bytes(r.value or b"").bid_id == bid.bid_id,
    )
    result = BidCleared.from_json_bytes(results[0].value or b"")
    assert result.accepted
    assert result.clearing_price_eur_per_mwh == 254.17
    records = await wait_for_records(
        infra.kafka_bootstrap,
        topics.MARKET_ACTIVATIONS.name,
        lambda r: PoolActivated.from_json_bytes(r.value or b"").bid_id == bid.bid_id,
        timeout=150,
    )
    activation = PoolActivated.from_json_bytes(records[0].value or b"")
    assert activation.direction is Direction.UP
    assert activation.power_mw == 1.0
    assert activation.start == quarter
    async with httpx.AsyncClient(timeout=10.0) as client:
        body = (await client.get(f"{services['market_sim'].url}/settlement")).json()
    line = next(x for x in body["lines"] if x["kind"] == "activation" and x["bid_id"] == bid.bid_id)
    assert line["revenue_eur"] == pytest.approx(1.0 * 0.25 * 254.17, abs=0.01)


async def test_sites_an_operator_excluded_are_left_out_of_the_plan(
    infra: Infra, services: dict[str, RunningService]
) -> None:
    """pool.membership in_pool=False takes a site out of the next plan; in_pool=True brings it back."""
    bidding = services["bidding"].url
    async with httpx.AsyncClient(timeout=10.0) as client:
        known = (await poll_json(client, f"{bidding}/inputs", lambda b: True))["registered_sites"]
    ids = await _publish_fleet(infra, unique("exclfleet"))
    out = set(ids[:12])

    async def membership(site_ids: set[str], in_pool: bool) -> None:
        for site_id in site_ids:
            change = SitePoolMembershipChanged(
                site_id=site_id, in_pool=in_pool, changed_at=utc_now(), changed_by="op-test"
            )
            await produce(
                infra.kafka_bootstrap, topics.POOL_MEMBERSHIP.name, change.to_json_bytes(), change.kafka_key()
            )

    async def planned_sites(client: httpx.AsyncClient) -> set[bytes]:
        trigger = unique("da-excl")
        summary = (await client.post(f"{bidding}/plan/run", params={"trigger": trigger})).json()
        plans = await wait_for_records(
            infra.kafka_bootstrap,
            topics.POOL_PLAN.name,
            lambda r: json.loads(r.value or b"{}").get("plan_id") == trigger,
            count=summary["sites"],
        )
        return {r.key or b"" for r in plans}

    async with httpx.AsyncClient(timeout=120.0) as client:
        registered = await poll_json(
            client, f"{bidding}/inputs", lambda b: b["registered_sites"] >= known + SITES
        )
        before = registered["excluded_sites"]
        await membership(out, False)
        await poll_json(client, f"{bidding}/inputs", lambda b: b["excluded_sites"] == before + len(out))
        planned = await planned_sites(client)
        assert {s.encode() for s in ids[12:]} <= planned
        assert not {s.encode() for s in out} & planned
        await membership(out, True)
        await poll_json(client, f"{bidding}/inputs", lambda b: b["excluded_sites"] == before)
        assert {s.encode() for s in ids} <= await planned_sites(client)
