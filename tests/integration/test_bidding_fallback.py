"""A bidding process whose solver cannot finish still publishes a plan, flagged, and raises its alarm."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from hybridpool_shared import topics
from tests.infra import Infra, produce, running, unique, wait_for_records
from tests.integration.test_bidding_market import _master

pytestmark = pytest.mark.integration


async def test_timed_out_solver_publishes_a_flagged_fallback_plan_and_counts_it(infra: Infra) -> None:
    """Time limit 1 ms: plan/run answers with fallback=true, pool.plan carries it, the metric moves."""
    ids = [unique("fallback-site") for _ in range(5)]
    for site_id in ids:
        await produce(
            infra.kafka_bootstrap,
            topics.SITES_REGISTRY.name,
            _master(site_id).to_json_bytes(),
            site_id.encode(),
        )
    with running(
        "bidding", infra, {"BIDDING_STARTUP_DELAY_S": "86400", "BIDDING_TIME_LIMIT_S": "0.001"}
    ) as svc:
        async with httpx.AsyncClient(timeout=120.0) as client:
            deadline = time.monotonic() + 60
            while (await client.get(f"{svc.url}/inputs")).json()["registered_sites"] < len(ids):
                assert time.monotonic() < deadline, "registry not consumed"
                await asyncio.sleep(0.3)
            trigger = unique("fallback")
            summary = (await client.post(f"{svc.url}/plan/run", params={"trigger": trigger})).json()
            metrics = (await client.get(f"{svc.url}/metrics")).text
    assert summary["fallback"] is True
    assert summary["status"] == "fallback"
    assert summary["capacity_bids"] == []
    assert "hybridpool_bidding_solver_failures_total 1.0" in metrics
    assert "hybridpool_bidding_plan_fallback 1.0" in metrics
    plans = await wait_for_records(
        infra.kafka_bootstrap,
        topics.POOL_PLAN.name,
        lambda r: json.loads(r.value or b"{}").get("plan_id") == trigger and r.key == ids[0].encode(),
    )
    assert json.loads(plans[0].value or b"{}")["fallback"] is True
