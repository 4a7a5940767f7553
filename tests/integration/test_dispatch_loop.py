"""The dispatch process on the real broker and Redis against simulated villas answering in the test.

services/site_sim had not landed when this was written, so a small responder here consumes
dispatch.commands from the real broker, obeys them (10 % of villas do not), publishes acks on
dispatch.acks and telemetry on sites.telemetry, and records the ground truth of every reaction.
Time is compressed (ramps of seconds, lock-out and min run 45 s) so the whole run takes about two minutes;
the seed's real timings at 2,200 villas are proven in tests/unit/test_dispatch_closed_loop.py.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from hybridpool_shared import topics
from hybridpool_shared.domain.reaction import EXPECTED_TRUST_SHARE
from hybridpool_shared.messages import (
    CommandAcknowledged,
    ReactionMeasured,
    SgReadyState,
    SwitchHeatPump,
    TelemetryReported,
)
from services.dispatch.domain.safety import LoggedCommand, rule_violations
from tests.infra import Infra, poll_json, running, unique, wait_for_records

# Dispatch follows every activation on the topic and every site state in Redis: other tests' would interfere.
pytestmark = [pytest.mark.integration, pytest.mark.private_infra]

VILLAS = 200
TELEMETRY_S = 2.0
OFF_RAMP_S = 8.0
ON_TAU_S = 6.0
LOCKOUT_S = 45.0
ACTIVATION_S = 45.0


@dataclass
class Villa:
    """A compressed-time villa: off ramps linearly to 0, on rises first-order."""

    site_id: str
    rated_kw: float
    running: bool
    run_kw: float
    behaviour: str
    state: SgReadyState = SgReadyState.NORMAL
    applied: float = 0.0
    from_kw: float = 0.0
    seq: int = -1
    seen: set[str] = field(default_factory=set)

    def power(self, t: float) -> float:
        """Electric power at wall time t."""
        elapsed = max(0.0, t - self.applied)  # a reading stamped just before the command arrived
        if self.state is SgReadyState.BLOCK:
            return max(0.0, self.from_kw * (1 - elapsed / OFF_RAMP_S))
        if self.state is SgReadyState.FORCE_ON:
            return self.from_kw + (self.run_kw - self.from_kw) * (1 - math.exp(-elapsed / ON_TAU_S))
        return self.run_kw if self.running else 0.0


@dataclass(frozen=True)
class Applied:
    """Ground truth of one obeyed switch: when, and the power it moved from and towards."""

    at: float
    state: SgReadyState
    from_kw: float
    to_kw: float

    def seconds_to(self, change_kw: float) -> float | None:
        """Seconds after applying at which the power had moved by change_kw (None: it never did)."""
        total = abs(self.to_kw - self.from_kw)
        if change_kw >= total:
            return None
        if self.state is SgReadyState.BLOCK:
            return OFF_RAMP_S * change_kw / total
        return -ON_TAU_S * math.log(1 - change_kw / total)

    def phases(self, expected_change_kw: float) -> dict[str, float | None]:
        """When the change began and reached 50 % and 90 % of the reference change.

        The reference is the expected change dispatch announced, unless the villa's real change is
        more than EXPECTED_TRUST_SHARE away from it: then the real one (the issue's rule, see
        hybridpool_shared.domain.reaction). Dispatch cannot know an idle villa's power before it runs:
        without master data it expects 1.8 kW of villas that really draw 0.5 to 5 kW.
        """
        expected, real = abs(expected_change_kw), abs(self.to_kw - self.from_kw)
        ref = real if abs(real - expected) > EXPECTED_TRUST_SHARE * expected else expected
        out: dict[str, float | None] = {"first": self.at}
        for phase, share in (("r50", 0.5), ("r90", 0.9)):
            secs = self.seconds_to(share * ref)
            out[phase] = None if secs is None else self.at + secs
        return out


class Responder:
    """Simulated villas on the real broker: obey commands, ack, report telemetry, keep ground truth."""

    def __init__(self, bootstrap: str, prefix: str) -> None:
        rng = random.Random(11)
        self.bootstrap = bootstrap
        self.villas: dict[str, Villa] = {}
        for i in range(VILLAS):
            rated = rng.uniform(1.0, 5.0)
            r = rng.random()
            behaviour = "ok" if r >= 0.1 else ("no_ack" if r < 0.05 else "no_change")
            site = f"{prefix}-v{i:04d}"
            self.villas[site] = Villa(
                site, rated, rng.random() < 0.6, rated * rng.uniform(0.5, 1.0), behaviour
            )
        self.truth: dict[str, Applied] = {}
        self.hp_events: list[tuple[str, float, bool]] = []  # (site, t, running)
        self.ticks: list[float] = []  # when telemetry was taken: the real intervals under load
        self.stop = asyncio.Event()
        self.rng = rng

    async def run(self) -> None:
        """Run until stopped."""
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=5)
        consumer = AIOKafkaConsumer(
            topics.DISPATCH_COMMANDS.name,
            bootstrap_servers=self.bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
        )
        await producer.start()
        await consumer.start()
        try:
            await asyncio.gather(self._commands(consumer, producer), self._telemetry(producer))
        finally:
            await consumer.stop()
            await producer.stop()

    async def _commands(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer) -> None:
        while not self.stop.is_set():
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for rec in records:
                    cmd = SwitchHeatPump.from_json_bytes(rec.value or b"")
                    villa = self.villas.get(cmd.site_id)
                    if villa is not None:
                        await self._apply(villa, cmd, producer)

    async def _apply(self, v: Villa, cmd: SwitchHeatPump, producer: AIOKafkaProducer) -> None:
        now = time.time()
        if v.behaviour == "no_ack":
            return
        duplicate = cmd.command_id in v.seen or cmd.seq <= v.seq
        v.seen.add(cmd.command_id)
        if v.behaviour == "ok" and not duplicate:
            was_running = v.power(now) > 0.1 or v.state is SgReadyState.FORCE_ON
            v.from_kw = v.power(now)
            v.state, v.applied, v.seq = cmd.sg_ready_state, now, cmd.seq
            if cmd.sg_ready_state in (SgReadyState.BLOCK, SgReadyState.FORCE_ON):
                to_kw = 0.0 if cmd.sg_ready_state is SgReadyState.BLOCK else v.run_kw
                self.truth[cmd.command_id] = Applied(now, cmd.sg_ready_state, v.from_kw, to_kw)
            runs = cmd.sg_ready_state is SgReadyState.FORCE_ON or (
                cmd.sg_ready_state is SgReadyState.NORMAL and v.running
            )
            if runs != was_running:
                self.hp_events.append((v.site_id, now, runs))
        ack = CommandAcknowledged(
            command_id=cmd.command_id,
            site_id=cmd.site_id,
            seq=cmd.seq,
            accepted=True,
            acknowledged_at=datetime.fromtimestamp(now, tz=UTC),
        )
        await producer.send(topics.DISPATCH_ACKS.name, ack.to_json_bytes(), key=ack.kafka_key())

    async def _telemetry(self, producer: AIOKafkaProducer) -> None:
        while not self.stop.is_set():
            now = time.time()
            self.ticks.append(now)
            futures = []
            for v in self.villas.values():
                p = max(0.0, v.power(now) + self.rng.gauss(0, 0.01))
                msg = TelemetryReported(
                    site_id=v.site_id,
                    measured_at=datetime.fromtimestamp(now, tz=UTC),
                    electric_power_kw=p,
                    meter_reading_kwh=1000.0,
                    heat_power_kw=3 * p,
                    supply_temp_c=40.0,
                    return_temp_c=35.0,
                    indoor_temp_c=21.0,
                    outdoor_temp_c=2.0,
                    hp_running=p > 0.1,
                    boiler_running=p <= 0.1,
                    sg_ready_state=int(v.state),
                )
                futures.append(
                    await producer.send(topics.SITES_TELEMETRY.name, msg.to_json_bytes(), key=msg.kafka_key())
                )
            await asyncio.gather(*futures)
            await asyncio.sleep(max(0.0, TELEMETRY_S - (time.time() - now)))


def _interval_at(ticks: list[float], at: float) -> float:
    """Return the telemetry interval in which `at` fell (at least the nominal one)."""
    i = bisect.bisect_right(ticks, at)
    if 0 < i < len(ticks):
        return max(TELEMETRY_S, ticks[i] - ticks[i - 1])
    return TELEMETRY_S


@pytest.fixture(scope="module")
def dispatch_env() -> dict[str, str]:
    return {
        "DISPATCH_TICK_S": "0.5",
        "DISPATCH_ACK_TIMEOUT_S": "3",
        "DISPATCH_FIRST_CHANGE_DEADLINE_UP_S": "12",
        "DISPATCH_FIRST_CHANGE_DEADLINE_DOWN_S": "12",
        "DISPATCH_SETTLE_UP_S": "20",
        "DISPATCH_SETTLE_DOWN_S": "30",
        "DISPATCH_RELEASE_STAGGER_SLOTS": "3",
        "DISPATCH_RELEASE_STAGGER_STEP_S": "2",
        "DISPATCH_LEASE_GRACE_S": "30",
        "DISPATCH_REACTION_STABLE_WINDOW_S": "6",
        "DISPATCH_REACTION_GIVE_UP_S": "40",
        "DISPATCH_DEFAULT_MIN_RUN_MINUTES": str(LOCKOUT_S / 60),
        "DISPATCH_DEFAULT_LOCKOUT_MINUTES": str(LOCKOUT_S / 60),
        "DISPATCH_FOLLOW_PLAN": "false",
    }


async def test_activation_with_replacements_reactions_and_rules(
    infra: Infra, dispatch_env: dict[str, str]
) -> None:
    prefix = unique("dl")
    responder = Responder(infra.kafka_bootstrap, prefix)
    task = asyncio.create_task(responder.run())
    try:
        with running("dispatch", infra, {**dispatch_env, "DISPATCH_SITE_PREFIX": prefix}) as svc:
            async with httpx.AsyncClient(base_url=svc.url, timeout=10) as client:
                running_kw = sum(v.run_kw for v in responder.villas.values() if v.running)
                await poll_json(client, "/capacity", lambda b: b["up"] > 0.95 * running_kw, 60)
                up_kw = round(0.4 * running_kw / 100) / 10  # MW, 0.1 steps
                up = (
                    await client.post(
                        "/activations/test",
                        json={"product": "mfrr", "direction": "up", "mw": up_kw, "duration_s": ACTIVATION_S},
                    )
                ).json()
                big = (
                    await client.post(
                        "/activations/test",
                        json={"product": "mfrr", "direction": "down", "mw": 5.0, "duration_s": 20},
                    )
                ).json()
                rep_big = await poll_json(
                    client, f"/activations/{big['activation_id']}/report", lambda b: b["finished"], 60
                )
                rep = await poll_json(
                    client, f"/activations/{up['activation_id']}/report", lambda b: b["finished"], 90
                )
                await poll_json(
                    client, "/activations", lambda b: all(a["state"] == "finished" for a in b), 90
                )
                log = (await client.get("/commands", params={"limit": 100000})).json()
                csv = (
                    await client.get(f"/activations/{up['activation_id']}/report", params={"format": "csv"})
                ).text
                metrics = (await client.get("/metrics")).text
    finally:
        responder.stop.set()
        await task

    # the closed loop delivered despite 10 % unresponsive villas, by replacing them
    assert rep["verdict"] == "passed", rep["reasons"]
    assert rep["units_unresponsive"] > 0
    assert rep["units_replaced"] > 0
    assert rep["time_to_100_s"] is not None
    assert rep["time_to_100_s"] < 40
    assert csv.splitlines()[0].startswith("at_utc,seconds_since_start")
    # too few units: failed, and why
    assert rep_big["verdict"] == "failed"
    assert rep_big["reasons"][0].startswith("too few available units")

    # no command violated a lock-out or minimum run (command log), and no HP restarted inside its rest
    sent = [e for e in log if e["event"] == "sent" and e["site_id"].startswith(prefix)]
    logged = [
        LoggedCommand(
            e["site_id"],
            datetime.fromisoformat(e["issued_at"]).timestamp(),
            SgReadyState(e["sg_ready_state"]),
            e["command_id"],
        )
        for e in sent
    ]
    assert any(c.state is SgReadyState.NORMAL for c in logged)  # units were handed back
    assert rule_violations(logged, {}, (LOCKOUT_S, LOCKOUT_S)) == []
    last_stop: dict[str, float] = {}
    for site, t, runs in sorted(responder.hp_events, key=lambda e: e[1]):
        if runs and site in last_stop:
            assert t - last_stop[site] >= LOCKOUT_S - 0.5, (
                f"{site} restarted {t - last_stop[site]:.1f} s after stopping"
            )
        if not runs:
            last_stop[site] = t
    assert 'hybridpool_dispatch_commands_total{event="resent"}' in metrics
    assert 'hybridpool_dispatch_reaction_seconds_bucket{le="5.0",phase="reached_50"}' in metrics

    # measured reaction times match the villas' ground truth within one telemetry interval
    truth = responder.truth
    records = await wait_for_records(
        infra.kafka_bootstrap,
        topics.DISPATCH_REACTIONS.name,
        lambda r: (r.key or b"").decode().startswith(prefix),
        count=len([c for c in truth if c in {e["command_id"] for e in sent}]),
        timeout=60,
    )
    reactions = [ReactionMeasured.from_json_bytes(r.value or b"") for r in records]
    compared = within = 0
    misses: list[tuple[str, float, float | None, float | None]] = []
    for m in reactions:
        applied = truth.get(m.command_id)
        if applied is None:
            continue
        expected = applied.phases(m.expected_change_kw)
        for phase, at in (("first", m.first_change_at), ("r50", m.reached_50_at), ("r90", m.reached_90_at)):
            compared += 1
            want = expected[phase]
            if want is None or at is None:
                within += want is None and at is None  # never reached, and measured as never reached
                if want is not None or at is not None:
                    misses.append((phase, m.expected_change_kw, None, want))
                continue
            if abs(at.timestamp() - want) <= _interval_at(responder.ticks, want):
                within += 1
            else:
                misses.append((phase, m.expected_change_kw, at.timestamp() - want, want - applied.at))
    assert compared >= 3 * 50
    assert within / compared >= 0.95, (
        f"{within}/{compared} phases within one telemetry interval: {misses[:12]}"
    )
    unresponsive = {s for s, v in responder.villas.items() if v.behaviour != "ok"}
    assert any(not m.responded for m in reactions if m.site_id in unresponsive)
