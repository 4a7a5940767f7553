"""The villa simulator's physics and command handling, without I/O."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from hybridpool_shared import topics
from hybridpool_shared.domain import thermal
from hybridpool_shared.messages import SgReadyState, SwitchHeatPump, TelemetryReported
from hybridpool_shared.runtime import build_service
from services.site_sim.clock import SimClock
from services.site_sim.domain.fleet import generate
from services.site_sim.domain.sim import Change, FleetSim, to_dt
from services.site_sim.domain.weather import WeatherTrace
from services.site_sim.runner import SimRunner
from services.site_sim.settings import SiteSimSettings

JAN = datetime(2026, 1, 15, tzinfo=UTC)


def _sim(n: int = 300, start: datetime = JAN, seed: int = 3) -> FleetSim:
    return FleetSim(generate(n, seed=seed, changed_at=start), start.timestamp(), seed=seed)


def _cmd(
    sim: FleetSim, i: int, state: SgReadyState, seq: int, minutes: float = 30, cid: str = ""
) -> SwitchHeatPump:
    at = to_dt(sim.t)
    return SwitchHeatPump(
        command_id=cid or f"c-{i}-{seq}",
        site_id=sim.p.site_ids[i],
        seq=seq,
        sg_ready_state=state,
        issued_at=at,
        valid_until=at + timedelta(minutes=minutes),
    )


def _responsive(sim: FleetSim, on: bool) -> int:
    ok = ~sim.p.unresponsive & ~sim.p.offline & (sim.hp_on == on)
    return int(np.flatnonzero(ok)[0])


def test_master_data_in_realistic_ranges() -> None:
    p = generate(2200, seed=1, changed_at=JAN)
    assert len(p.master) == 2200
    assert len({m.site_id for m in p.master}) == 2200
    assert all(1.0 <= m.hp_electric_power_kw <= 5.0 for m in p.master)
    assert all(3.0 <= m.hp_heat_power_kw <= 12.0 for m in p.master)
    assert all(20.0 <= m.boiler_power_kw <= 35.0 for m in p.master)
    assert {m.lockout_minutes for m in p.master} >= {15}
    assert np.median(p.houses.capacity_kwh_per_k / np.array([m.heated_area_m2 for m in p.master])) == (
        pytest.approx(0.080, abs=0.005)
    )
    assert 0 < p.unresponsive.sum() < 100
    assert 0 < p.offline.sum() < 60


def test_buildings_are_larger() -> None:
    p = generate(10, buildings=2, seed=1, changed_at=JAN)
    assert [m.site_id for m in p.master[-2:]] == ["sim-building-0000", "sim-building-0001"]
    assert min(m.hp_electric_power_kw for m in p.master[-2:]) >= 10.0


def test_cop_falls_with_outdoor_and_rises_with_lower_flow() -> None:
    outdoor = np.array([-10.0, 0.0, 10.0])
    cop = thermal.hp_cop(outdoor, np.full(3, 45.0), 0.36)
    assert cop[0] < cop[1] < cop[2]
    assert (
        thermal.hp_cop(np.array([0.0]), np.array([35.0]), 0.36)[0]
        > thermal.hp_cop(np.array([0.0]), np.array([55.0]), 0.36)[0]
    )


def test_energy_balance_of_every_house_over_a_day() -> None:
    sim = _sim(100)
    h = sim.p.houses
    stored_start = h.capacity_kwh_per_k * sim.indoor_c
    heat_in = np.zeros(sim.p.n)
    loss = np.zeros(sim.p.n)
    meter_start = sim.meter_kwh.copy()
    sampled_kwh = np.zeros(sim.p.n)  # power sampled every second, summed: independent of the meter
    for _ in range(2880):
        t0 = sim.t
        indoor, outdoor = sim.indoor_c.copy(), sim._outdoor(t0)
        sim.step(30.0)
        sampled_kwh += sum(sim.power_kw(t0 + s + 0.5) for s in range(30)) / 3600.0
        heat_in += (sim.heat_kw + h.gains_kw) * 30.0 / 3600.0
        loss += thermal.heat_loss_kw(h, indoor, outdoor) * 30.0 / 3600.0
    stored_end = h.capacity_kwh_per_k * sim.indoor_c
    np.testing.assert_allclose(stored_end - stored_start, heat_in - loss, atol=1e-6)
    np.testing.assert_allclose(sim.meter_kwh - meter_start, sampled_kwh, rtol=1e-3)
    assert (sim.meter_kwh - meter_start).mean() > 10.0  # a January day uses real electricity


def test_meter_integrates_the_switch_on_curve_exactly() -> None:
    sim = _sim(50)
    i = _responsive(sim, on=False)
    sim.off_since[i] = sim.t - 3600
    sim.indoor_c[i] = sim.p.houses.setpoint_c[i] - 1.0  # cold: the thermostat will keep it on
    before = float(sim.meter_kwh[i])
    out = sim.handle_command(_cmd(sim, i, SgReadyState.FORCE_ON, 1), sim.t)
    assert out is not None
    assert out.accepted
    for _ in range(180):
        sim.step(10.0)
    el, dead, tau = sim.p.hp_el_kw[i], sim.p.on_dead_s[i], sim.p.on_tau_s[i]
    moving = 1800.0 - dead
    expected = el * (moving - tau * (1 - math.exp(-moving / tau))) / 3600.0
    assert float(sim.meter_kwh[i]) - before == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("month", [1, 3, 10])
def test_comfort_band_held_under_local_control(month: int) -> None:
    sim = _sim(start=datetime(2026, month, 10, tzinfo=UTC))
    lo, hi = thermal.comfort_bounds_c(sim.p.houses)
    for _ in range(4320):
        sim.step(20.0)
        assert np.all(sim.indoor_c >= lo)
        assert np.all(sim.indoor_c <= hi)


def test_comfort_band_held_under_blocks_and_forced_runs() -> None:
    sim = _sim(100)
    lo, hi = thermal.comfort_bounds_c(sim.p.houses)
    rng = np.random.default_rng(5)
    for k in range(4320):
        if k % 45 == 0:  # every 15 min a random tenth of the fleet is blocked or forced on for 1 h
            for seq_i in rng.choice(sim.p.n, sim.p.n // 10, replace=False).tolist():
                state = SgReadyState.BLOCK if rng.random() < 0.5 else SgReadyState.FORCE_ON
                sim.handle_command(_cmd(sim, seq_i, state, k, minutes=60), sim.t)
        sim.step(20.0)
        assert np.all(sim.indoor_c >= lo)
        assert np.all(sim.indoor_c <= hi)
    assert (sim.boiler_kw > 0).any()


def test_lockout_and_min_run_are_honoured_and_refusals_say_why() -> None:
    sim = _sim(50)
    i = _responsive(sim, on=True)
    sim.on_since[i] = sim.t  # just started
    refused = sim.handle_command(_cmd(sim, i, SgReadyState.BLOCK, 1), sim.t)
    assert refused is not None
    assert not refused.accepted
    assert "minimum run" in refused.reason
    assert sim.hp_on[i]
    for _ in range(int(sim.p.min_run_s[i] // 10) + 1):
        sim.step(10.0)
    stop = sim.handle_command(_cmd(sim, i, SgReadyState.BLOCK, 2), sim.t)
    assert stop is not None
    assert stop.accepted
    assert not sim.hp_on[i]
    restart = sim.handle_command(_cmd(sim, i, SgReadyState.FORCE_ON, 3), sim.t + 60)
    assert restart is not None
    assert not restart.accepted
    assert "lock-out" in restart.reason
    assert not sim.hp_on[i]


def test_no_restart_inside_lockout_during_a_busy_day() -> None:
    sim = _sim(100)
    rng = np.random.default_rng(9)
    last_off = np.full(sim.p.n, -np.inf)
    last_on = np.full(sim.p.n, -np.inf)
    for k in range(4320):
        if k % 15 == 0:
            for i in rng.choice(sim.p.n, 10, replace=False).tolist():
                state = [SgReadyState.BLOCK, SgReadyState.FORCE_ON, SgReadyState.NORMAL][k // 15 % 3]
                sim.handle_command(_cmd(sim, i, state, k), sim.t)
        was = sim.hp_on.copy()
        sim.step(20.0)
        started = ~was & sim.hp_on
        stopped = was & ~sim.hp_on
        assert np.all(sim.on_since[started] - last_off[started] >= sim.p.lockout_s[started])
        assert np.all(sim.off_since[stopped] - last_on[stopped] >= sim.p.min_run_s[stopped])
        last_off[stopped] = sim.off_since[stopped]
        last_on[started] = sim.on_since[started]


def test_lease_expiry_reverts_to_local_control() -> None:
    sim = _sim(50)
    i = _responsive(sim, on=True)
    sim.indoor_c[i] = sim.p.houses.setpoint_c[i] - 0.8  # cold: local control wants the HP on
    out = sim.handle_command(_cmd(sim, i, SgReadyState.BLOCK, 1, minutes=20), sim.t)
    assert out is not None
    assert out.accepted
    for _ in range(6 * 19):
        sim.step(10.0)
        assert not sim.hp_on[i]
        assert sim.sg[i] == 1
    for _ in range(6 * 20):
        sim.step(10.0)
    assert sim.sg[i] == 2
    sim.indoor_c[i] = sim.p.houses.setpoint_c[i] - 0.8  # the boiler held the set point; cool it again
    sim.step(10.0)
    assert sim.hp_on[i], "after the lease the thermostat runs the HP again (lock-out over by then)"


def test_only_newer_commands_apply_and_duplicates_are_idempotent() -> None:
    sim = _sim(50)
    i = _responsive(sim, on=True)
    first = _cmd(sim, i, SgReadyState.RECOMMEND_ON, 5)
    assert sim.handle_command(first, sim.t) == sim.handle_command(first, sim.t + 5)
    assert len(sim.ground_truth(command_id=first.command_id)) == 1
    old = sim.handle_command(_cmd(sim, i, SgReadyState.BLOCK, 4), sim.t)
    assert old is not None
    assert not old.accepted
    assert "not newer" in old.reason
    assert sim.sg[i] == 3
    expired = _cmd(sim, i, SgReadyState.NORMAL, 6, minutes=1)
    late = sim.handle_command(expired, sim.t + 120)
    assert late is not None
    assert not late.accepted
    assert "lease expired" in late.reason


def test_offline_sites_stay_silent_and_unknown_sites_are_refused() -> None:
    sim = _sim(400)
    off = int(np.flatnonzero(sim.p.offline)[0])
    assert sim.handle_command(_cmd(sim, off, SgReadyState.BLOCK, 1), sim.t) is None
    unknown = _cmd(sim, 0, SgReadyState.BLOCK, 1).model_copy(update={"site_id": "nobody"})
    out = sim.handle_command(unknown, sim.t)
    assert out is not None
    assert not out.accepted
    assert "unknown site" in out.reason
    sim.schedule_reports(60)
    for _ in range(6):
        sim.step(10.0)
    reported = {r.site_id for r in sim.due_reports(60)}
    sim.step(10.0)
    assert sim.p.site_ids[off] not in reported | {r.site_id for r in sim.due_reports(60)}


def test_ground_truth_matches_the_power_curve() -> None:
    sim = _sim(50)
    i = _responsive(sim, on=True)
    sim.indoor_c[i] = sim.p.houses.setpoint_c[i]
    cmd = _cmd(sim, i, SgReadyState.BLOCK, 1)
    assert sim.handle_command(cmd, sim.t) is not None
    (truth,) = sim.ground_truth(command_id=cmd.command_id)
    assert truth.change is Change.OFF
    assert truth.to_kw == 0.0
    assert truth.first_change_at
    assert truth.reached_50_at
    assert truth.stable_at
    for at, share in ((truth.reached_50_at, 0.5), (truth.reached_90_at, 0.9), (truth.stable_at, 0.95)):
        assert at is not None
        power = float(sim.power_kw(at.timestamp())[i])
        assert (truth.from_kw - power) / truth.from_kw == pytest.approx(share, abs=1e-6)
    assert (truth.stable_at - truth.applied_at).total_seconds() < 600


def test_fleet_reaction_times_follow_the_seed_measurement() -> None:
    sim = _sim(500)
    ok = ~sim.p.unresponsive & ~sim.p.offline
    on50 = sim.p.on_dead_s[ok] + sim.p.on_tau_s[ok] * math.log(2)
    on_stable = sim.p.on_dead_s[ok] + sim.p.on_tau_s[ok] * math.log(20)
    off_stable = sim.p.off_dead_s[ok] + sim.p.off_tau_s[ok] * math.log(20)
    assert np.median(on50) / 60 == pytest.approx(4.0, abs=0.5)
    assert np.median(on_stable) / 60 == pytest.approx(13.0, abs=1.5)
    assert np.median(off_stable) / 60 == pytest.approx(1.7, abs=0.4)
    assert np.quantile(on_stable, 0.97) > 1.5 * np.median(on_stable)  # some sites are slow


def test_readings_are_valid_and_spread_over_the_interval() -> None:
    sim = _sim(600)
    sim.schedule_reports(60)
    per_step = []
    seen = set()
    for _ in range(6):
        sim.step(10.0)
        batch = sim.due_reports(60)
        per_step.append(len(batch))
        seen |= {r.site_id for r in batch}
    online = int((~sim.p.offline).sum())
    assert len(seen) == online
    assert max(per_step) < online / 2
    r = sim.readings(np.array([0]))[0]
    assert r.meter_reading_kwh == pytest.approx(float(sim.meter_kwh[0]), abs=1e-3)


def test_weather_is_a_danish_winter() -> None:
    w = WeatherTrace()
    jan = [
        w.outdoor_c(datetime(2026, 1, d, h, tzinfo=UTC).timestamp()) for d in range(1, 31) for h in range(24)
    ]
    jul = [
        w.outdoor_c(datetime(2026, 7, d, h, tzinfo=UTC).timestamp()) for d in range(1, 31) for h in range(24)
    ]
    assert -3.0 < np.mean(jan) < 4.0
    assert 14.0 < np.mean(jul) < 20.0
    assert min(jan) > -15.0


def test_a_restarted_simulator_never_reports_a_lower_meter() -> None:
    first = _sim(100)
    for _ in range(720):
        first.step(30.0)  # six hours
    restarted = FleetSim(first.p, first.t, seed=3)
    assert np.all(restarted.meter_kwh >= first.meter_kwh)


def test_the_simulated_clock_runs_faster_by_its_speedup() -> None:
    from services.site_sim.clock import SimClock

    clock = SimClock(start_s=1_000_000.0, speedup=60.0)
    assert clock.now_s() == pytest.approx(1_000_000.0, abs=5.0)
    assert clock.real_seconds_until(1_000_000.0 + 600.0) == pytest.approx(10.0, abs=0.1)


class _FlakyProducer:
    """Refuses the first send; then keeps what it is sent and says when it has `wanted` readings."""

    def __init__(self, wanted: int) -> None:
        self.refused: list[str] = []
        self.sent: list[TelemetryReported] = []
        self.wanted = wanted
        self.enough = asyncio.Event()

    async def send_all(self, readings: Sequence[TelemetryReported], chunk: int) -> None:
        if not self.refused:
            self.refused = [r.site_id for r in readings]
            raise ConnectionError("broker unavailable")
        self.sent += readings
        if len(self.sent) >= self.wanted:
            self.enough.set()


async def test_readings_the_broker_refused_are_sent_again_not_lost() -> None:
    settings = SiteSimSettings(
        kafka_bootstrap="127.0.0.1:9", redis_url="redis://127.0.0.1:9/0", sites=20, speedup=600.0
    )
    service = build_service("site_sim", settings, produces=(topics.SITES_TELEMETRY,))
    sim = _sim(20)
    runner = SimRunner(service, sim, SimClock(sim.t, settings.speedup), settings)
    producer = _FlakyProducer(wanted=60)
    loop = asyncio.create_task(runner._loop(producer))  # type: ignore[arg-type]
    try:
        await asyncio.wait_for(producer.enough.wait(), 30)
    finally:
        loop.cancel()
    assert producer.refused
    first = producer.sent[: len(producer.refused)]
    assert [r.site_id for r in first] == producer.refused  # the refused step's readings came first
    per_site = Counter(r.site_id for r in producer.sent)
    assert len(per_site) == 20
