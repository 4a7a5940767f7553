"""Dispatch against the real simulator process (services/site_sim) on the real broker and Redis.

The simulator runs 40× faster than real time and exports its ground truth per command; dispatch
follows the telemetry's event time. Measured reaction phases must match the truth within one
telemetry interval for ≥ 95 % of commands, and no command may break a lock-out or minimum run
(checked from the command log against the master data, and from the simulator's own refusals).
"""

from __future__ import annotations

import asyncio
from datetime import datetime

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from hybridpool_shared import topics
from hybridpool_shared.messages import ReactionMeasured, SgReadyState
from services.dispatch.domain.safety import LoggedCommand, rule_violations
from services.site_sim.app import master_data
from services.site_sim.settings import SiteSimSettings
from tests.infra import Infra, poll_json, running, unique, wait_for_records

# Dispatch follows every activation on the topic and every site state in Redis: other tests' would interfere.
pytestmark = [pytest.mark.integration, pytest.mark.private_infra]

SITES = 200
SPEEDUP = 40.0
INTERVAL_S = 30.0  # simulated seconds between readings
ACTIVATION_S = 900.0  # one quarter-hour, simulated


async def _register(bootstrap: str, prefix: str) -> dict[str, tuple[float, float]]:
    """Publish the simulated fleet's master data on sites.registry; return (min_run_s, lockout_s) per site."""
    sites = master_data(SiteSimSettings(sites=SITES, site_prefix=prefix))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        futures = [
            await producer.send(topics.SITES_REGISTRY.name, m.to_json_bytes(), key=m.kafka_key())
            for m in sites
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return {m.site_id: (m.min_run_minutes * 60.0, m.lockout_minutes * 60.0) for m in sites}


def _mw(kw: float) -> float:
    return max(0.1, round(0.4 * kw / 100) / 10)


async def test_reactions_match_simulator_ground_truth_and_rules_hold(infra: Infra) -> None:
    prefix = unique("ss")
    rules = await _register(infra.kafka_bootstrap, prefix)
    sim_env = {
        "SITE_SIM_SITES": str(SITES),
        "SITE_SIM_SITE_PREFIX": prefix,
        "SITE_SIM_SPEEDUP": str(SPEEDUP),
        "SITE_SIM_TELEMETRY_INTERVAL_S": str(INTERVAL_S),
        "SITE_SIM_PHYSICS_STEP_S": "5",
        "SITE_SIM_REGISTER_FLEET": "false",  # the test publishes the master data itself
    }
    dispatch_env = {
        "DISPATCH_SITE_PREFIX": prefix,
        "DISPATCH_CLOCK": "telemetry",
        "DISPATCH_SPEEDUP": str(SPEEDUP),
        "DISPATCH_TICK_S": "0.25",
        "DISPATCH_ACK_TIMEOUT_S": "40",
        "DISPATCH_RELEASE_STAGGER_STEP_S": "5",
        "DISPATCH_FOLLOW_PLAN": "false",
    }
    with running("site_sim", infra, sim_env) as sim, running("dispatch", infra, dispatch_env) as dsp:
        async with httpx.AsyncClient(base_url=dsp.url, timeout=10) as client:
            cap = await poll_json(client, "/capacity", lambda b: b["up"] > 100 and b["down"] > 100, 60)
            ids = []
            for direction in ("up", "down"):
                body = {
                    "product": "mfrr",
                    "direction": direction,
                    "mw": _mw(cap[direction]),
                    "duration_s": ACTIVATION_S,
                }
                ids.append((await client.post("/activations/test", json=body)).json()["activation_id"])
            reports = [
                await poll_json(client, f"/activations/{a}/report", lambda b: b["finished"], 90) for a in ids
            ]
            await poll_json(client, "/activations", lambda b: all(a["state"] == "finished" for a in b), 90)
            log = (await client.get("/commands", params={"limit": 100000})).json()
        async with httpx.AsyncClient(base_url=sim.url, timeout=30) as client:
            truth = {t["command_id"]: t for t in (await client.get("/ground-truth")).json()}
        ours = [e for e in log if e["site_id"].startswith(prefix)]
        sent = [e for e in ours if e["event"] == "sent"]
        switched = {e["command_id"] for e in sent if e["sg_ready_state"] in (1, 4)}
        measured = {e["command_id"] for e in sent if e["measured"]}
        moved = {
            c
            for c, t in truth.items()
            if c in measured and t["change"] in ("on", "off") and not t["interrupted_at"]
        }
        records = await wait_for_records(
            infra.kafka_bootstrap,
            topics.DISPATCH_REACTIONS.name,
            lambda r: ReactionMeasured.from_json_bytes(r.value or b"").command_id in measured,
            count=len(measured),
            timeout=120,
        )

    # the pool answered in both directions, and the report says how it went
    for rep in reports:
        assert rep["units_dispatched"] > 0
        assert rep["time_to_50_s"] is not None
    # no command broke a lock-out or minimum run: by the log against master data, and by the simulator
    logged = [
        LoggedCommand(
            e["site_id"],
            datetime.fromisoformat(e["issued_at"]).timestamp(),
            SgReadyState(e["sg_ready_state"]),
            e["command_id"],
        )
        for e in sent
    ]
    assert any(c.state is SgReadyState.NORMAL for c in logged)
    assert rule_violations(logged, rules, (900.0, 900.0)) == []
    refusals = [e["reason"] for e in ours if e["event"] == "ack" and not e["accepted"]]
    assert not [r for r in refusals if r.startswith(("lock-out", "minimum run"))], refusals

    # every switch is measured, but for the few whose site had (nearly) stopped on its own when sent
    reactions = {m.command_id: m for m in (ReactionMeasured.from_json_bytes(r.value or b"") for r in records)}
    assert set(reactions) == measured
    assert measured <= switched
    assert len(measured) >= 0.9 * len(switched), f"{len(measured)} of {len(switched)} switches measured"
    # measured phases against the simulator's ground truth, within one telemetry interval
    assert len(moved) >= 30
    good = 0
    misses = []
    for cid in moved:
        t, m = truth[cid], reactions[cid]
        pairs = [
            (t["first_change_at"], m.first_change_at),
            (t["reached_50_at"], m.reached_50_at),
            (t["reached_90_at"], m.reached_90_at),
            (t["stable_at"], m.stable_at),
        ]
        errors = [
            None if got is None else got.timestamp() - datetime.fromisoformat(want).timestamp()
            for want, got in pairs
        ]
        if all(e is not None and abs(e) <= INTERVAL_S for e in errors):
            good += 1
        else:
            misses.append((t["change"], errors))
    assert good / len(moved) >= 0.95, f"{good}/{len(moved)} within {INTERVAL_S} s; misses: {misses[:8]}"
