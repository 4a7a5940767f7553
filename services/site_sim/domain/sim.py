"""The simulated fleet: house physics, local control, commands with leases, telemetry and ground truth.

Local control per villa, in priority order:
- protection (hardware): a stopped HP rests its lock-out before a restart, a started HP runs its
  minimum run time; nothing overrides these, and commands that would break them are refused;
- SG Ready state: 1 block (HP off, the boiler holds the set point), 2 normal (thermostat with
  ±0.5 K hysteresis), 3 recommend on (HP on below set point + 1.5 K), 4 force on (HP on below set
  point + 1.8 K, inside the comfort band); a command's state holds until its lease ends, then 2;
- the boiler tops up whenever the HP cannot keep the house above set point − 1 K.
Times are UTC epoch seconds of the simulated clock.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

from hybridpool_shared.domain import thermal
from hybridpool_shared.messages import SgReadyState, SwitchHeatPump, TelemetryReported
from services.site_sim.domain import dynamics
from services.site_sim.domain.fleet import FleetParams
from services.site_sim.domain.weather import WeatherTrace

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
BOILER_RESPONSE_H = 0.25
BOILER_RUNNING_KW = 0.2
THERMOSTAT_HYSTERESIS_K = 0.5
HP_ASSIST_BELOW_K = 1.0
RECOMMEND_ON_LIMIT_K = 1.5
FORCE_ON_LIMIT_K = 1.8
POWER_NOISE_KW = 0.01
MAX_REMEMBERED = 100_000
METER_EPOCH_S = datetime(2020, 1, 1, tzinfo=UTC).timestamp()


def to_dt(epoch_s: float) -> datetime:
    """Return an aware UTC datetime for an epoch second."""
    return datetime.fromtimestamp(epoch_s, tz=UTC)


class Change(StrEnum):
    """What an accepted command did to the heat pump."""

    ON = "on"
    OFF = "off"
    NONE = "none"
    UNRESPONSIVE = "unresponsive"


class ReactionTruth(BaseModel):
    """What really happened after a command: the simulator's ground truth to check measurements by."""

    model_config = ConfigDict(extra="forbid")

    command_id: str
    site_id: str
    sg_ready_state: int
    applied_at: datetime
    change: Change
    from_kw: float
    to_kw: float
    first_change_at: datetime | None = None
    reached_50_at: datetime | None = None
    reached_90_at: datetime | None = None
    stable_at: datetime | None = None
    interrupted_at: datetime | None = None


@dataclass(frozen=True)
class CommandOutcome:
    """A site's answer to a command."""

    command_id: str
    site_id: str
    seq: int
    accepted: bool
    reason: str


class FleetSim:
    """n villas advanced together in time steps, with numpy across villas."""

    def __init__(
        self, params: FleetParams, start_s: float, *, weather: WeatherTrace | None = None, seed: int = 1
    ) -> None:
        n = params.n
        self.p = params
        self.weather = weather or WeatherTrace()
        self.rng = np.random.default_rng(seed)
        self.t = start_s
        self.index = {sid: i for i, sid in enumerate(params.site_ids)}
        h = params.houses
        self.indoor_c: FloatArray = h.setpoint_c + self.rng.uniform(-0.5, 0.5, n)
        self.hp_on: BoolArray = self.rng.random(n) < 0.5
        self.on_since: FloatArray = np.full(n, start_s - 3600.0)
        self.off_since: FloatArray = np.full(n, start_s - 3600.0)
        level = np.where(self.hp_on, params.hp_el_kw, 0.0)
        self.p_from: FloatArray = level.copy()
        self.p_to: FloatArray = level.copy()
        self.moves_at: FloatArray = np.full(n, start_s - 3600.0)
        self.tau_s: FloatArray = params.on_tau_s.copy()
        # Meters start at what a site drawing full power since 2020 would show: a restarted simulator never
        # reports a lower reading than an earlier run of the same fleet could have reached.
        hours = max(0.0, start_s - METER_EPOCH_S) / 3600.0
        self.meter_kwh: FloatArray = (
            self.rng.uniform(1_000.0, 5_000.0, n) + 1.01 * params.hp_el_kw * hours
        ).round(3)
        self.heat_kw: FloatArray = np.zeros(n)
        self.boiler_kw: FloatArray = np.zeros(n)
        self.outdoor_c: FloatArray = self._outdoor(start_s)
        self.sg: npt.NDArray[np.int64] = np.full(n, int(SgReadyState.NORMAL), dtype=np.int64)
        self.lease_until: FloatArray = np.full(n, np.nan)
        self.last_seq: npt.NDArray[np.int64] = np.full(n, -1, dtype=np.int64)
        self.next_report_s: FloatArray = np.full(n, np.inf)
        self.truth: OrderedDict[str, ReactionTruth] = OrderedDict()
        self._open_truth: dict[int, str] = {}
        self._outcomes: OrderedDict[str, CommandOutcome] = OrderedDict()

    # ---- physics -------------------------------------------------------------------------------

    def _outdoor(self, t: float) -> FloatArray:
        result: FloatArray = self.weather.outdoor_c(t) + self.p.outdoor_offset_k
        return result

    def power_kw(self, t: float | None = None) -> FloatArray:
        """Return each site's true electric power at time t (default: now)."""
        return dynamics.power_at(
            self.t if t is None else t, self.p_from, self.p_to, self.moves_at, self.tau_s
        )

    def step(self, dt_s: float) -> None:
        """Advance every villa by dt_s seconds: leases, control, power, heat, indoor temperature."""
        t0, t1 = self.t, self.t + dt_s
        self._expire_leases(t0)
        self.outdoor_c = self._outdoor(t0)
        self._apply_control(t0)
        el_kwh = dynamics.energy_kwh(t0, t1, self.p_from, self.p_to, self.moves_at, self.tau_s)
        dt_h = dt_s / 3600.0
        hp_heat = self._hp_heat_kw(el_kwh / dt_h)
        boiler = self._boiler_kw(hp_heat)
        self.heat_kw = hp_heat + boiler
        self.boiler_kw = boiler
        self.indoor_c = thermal.step_indoor_c(
            self.p.houses, self.indoor_c, self.outdoor_c, self.heat_kw, dt_h
        )
        self.meter_kwh = self.meter_kwh + el_kwh
        self.t = t1

    def flow_c(self) -> FloatArray:
        """Return each site's heating-curve flow temperature now."""
        return thermal.flow_temp_c(self.outdoor_c, self.p.curve_slope)

    def cop(self) -> FloatArray:
        """Return each site's HP COP at the present outdoor and flow temperature."""
        return thermal.hp_cop(self.outdoor_c, self.flow_c(), self.p.cop_efficiency)

    def _hp_heat_kw(self, mean_el_kw: FloatArray) -> FloatArray:
        cap = self.p.hp_heat_max_kw * mean_el_kw / self.p.hp_el_kw
        result: FloatArray = np.minimum(self.cop() * mean_el_kw, cap)
        return result

    def _boiler_kw(self, hp_heat_kw: FloatArray) -> FloatArray:
        h = self.p.houses
        blocked = self._effective_sg() == int(SgReadyState.BLOCK)
        target = np.where(blocked, h.setpoint_c, h.setpoint_c - HP_ASSIST_BELOW_K)
        loss = thermal.heat_loss_kw(h, self.indoor_c, self.outdoor_c)
        wanted = (
            loss
            - hp_heat_kw
            - h.gains_kw
            + h.capacity_kwh_per_k * (target - self.indoor_c) / BOILER_RESPONSE_H
        )
        result: FloatArray = np.clip(wanted, 0.0, self.p.boiler_kw)
        return result

    # ---- control -------------------------------------------------------------------------------

    def _effective_sg(self) -> npt.NDArray[np.int64]:
        return np.where(self.p.unresponsive, int(SgReadyState.NORMAL), self.sg)

    def _desired_on(self) -> BoolArray:
        sp = self.p.houses.setpoint_c
        thermostat = np.where(
            self.indoor_c < sp - THERMOSTAT_HYSTERESIS_K,
            True,
            np.where(self.indoor_c > sp + THERMOSTAT_HYSTERESIS_K, False, self.hp_on),
        )
        sg = self._effective_sg()
        result: BoolArray = np.select(
            [sg == 1, sg == 3, sg == 4],
            [False, self.indoor_c < sp + RECOMMEND_ON_LIMIT_K, self.indoor_c < sp + FORCE_ON_LIMIT_K],
            default=thermostat,
        )
        return result

    def can_start(self, t: float) -> BoolArray:
        """Return which HPs have rested their lock-out at time t."""
        result: BoolArray = t >= self.off_since + self.p.lockout_s
        return result

    def can_stop(self, t: float) -> BoolArray:
        """Return which HPs have run their minimum run time at time t."""
        result: BoolArray = t >= self.on_since + self.p.min_run_s
        return result

    def _apply_control(self, t: float) -> None:
        desired = self._desired_on()
        new_on = np.where(self.hp_on, desired | ~self.can_stop(t), desired & self.can_start(t))
        changed = np.flatnonzero(new_on != self.hp_on)
        if changed.size:
            self._switch(changed, new_on[changed], t)

    def _switch(self, idx: npt.NDArray[np.intp], on: BoolArray, t: float) -> None:
        now_kw = dynamics.power_at(t, self.p_from[idx], self.p_to[idx], self.moves_at[idx], self.tau_s[idx])
        self.p_from[idx] = now_kw
        self.p_to[idx] = np.where(on, self.p.hp_el_kw[idx], 0.0)
        self.moves_at[idx] = t + np.where(on, self.p.on_dead_s[idx], self.p.off_dead_s[idx])
        self.tau_s[idx] = np.where(on, self.p.on_tau_s[idx], self.p.off_tau_s[idx])
        self.hp_on[idx] = on
        self.on_since[idx] = np.where(on, t, self.on_since[idx])
        self.off_since[idx] = np.where(on, self.off_since[idx], t)
        for i in idx.tolist():
            self._interrupt(i, t)

    def _interrupt(self, i: int, t: float) -> None:
        command_id = self._open_truth.pop(i, None)
        if command_id is not None and command_id in self.truth:
            truth = self.truth[command_id]
            stable = truth.stable_at
            if stable is None or stable.timestamp() > t:
                self.truth[command_id] = truth.model_copy(update={"interrupted_at": to_dt(t)})

    def _expire_leases(self, t: float) -> None:
        lapsed = self.lease_until <= t
        self.sg[lapsed] = int(SgReadyState.NORMAL)
        self.lease_until[lapsed] = np.nan

    # ---- commands ------------------------------------------------------------------------------

    def handle_command(self, cmd: SwitchHeatPump, t: float) -> CommandOutcome | None:
        """Apply a command at time t if its lease holds, it is newer and protection allows; None: offline."""
        known = self._outcomes.get(cmd.command_id)
        if known is not None:
            return known
        i = self.index.get(cmd.site_id)
        if i is not None and self.p.offline[i]:
            return None
        reason = self._refusal(cmd, i, t)
        if reason is None and i is not None:
            self._apply(cmd, i, t)
        outcome = CommandOutcome(cmd.command_id, cmd.site_id, cmd.seq, reason is None, reason or "")
        _remember(self._outcomes, cmd.command_id, outcome)
        return outcome

    def _refusal(self, cmd: SwitchHeatPump, i: int | None, t: float) -> str | None:
        if i is None:
            return "unknown site: not simulated here"
        if cmd.valid_until.timestamp() <= t:
            return f"lease expired at {cmd.valid_until.isoformat()}"
        if cmd.seq <= self.last_seq[i]:
            return f"seq {cmd.seq} is not newer than the applied seq {int(self.last_seq[i])}"
        state = cmd.sg_ready_state
        if state is SgReadyState.BLOCK and self.hp_on[i] and not self.can_stop(t)[i]:
            until = to_dt(float(self.on_since[i] + self.p.min_run_s[i]))
            return f"minimum run time: running until at least {until.isoformat()}"
        if state >= SgReadyState.RECOMMEND_ON and not self.hp_on[i] and not self.can_start(t)[i]:
            until = to_dt(float(self.off_since[i] + self.p.lockout_s[i]))
            return f"lock-out: resting until {until.isoformat()}"
        return None

    def _apply(self, cmd: SwitchHeatPump, i: int, t: float) -> None:
        self.sg[i] = int(cmd.sg_ready_state)
        self.lease_until[i] = cmd.valid_until.timestamp()
        self.last_seq[i] = cmd.seq
        was_on = bool(self.hp_on[i])
        from_kw = float(self.power_kw(t)[i])
        if not self.p.unresponsive[i]:
            desired = bool(self._desired_on()[i])
            if desired != was_on:
                self._switch(np.array([i]), np.array([desired]), t)
        self._record_truth(cmd, i, t, was_on, from_kw)

    def _record_truth(self, cmd: SwitchHeatPump, i: int, t: float, was_on: bool, from_kw: float) -> None:
        is_on = bool(self.hp_on[i])
        if self.p.unresponsive[i]:
            change = Change.UNRESPONSIVE
        elif is_on == was_on:
            change = Change.NONE
        else:
            change = Change.ON if is_on else Change.OFF
        truth = ReactionTruth(
            command_id=cmd.command_id,
            site_id=cmd.site_id,
            sg_ready_state=int(cmd.sg_ready_state),
            applied_at=to_dt(t),
            change=change,
            from_kw=round(from_kw, 4),
            to_kw=round(float(self.p_to[i]), 4),
        )
        if change in (Change.ON, Change.OFF):
            tau, moves = float(self.tau_s[i]), float(self.moves_at[i])
            truth = truth.model_copy(
                update={
                    "first_change_at": to_dt(moves),
                    "reached_50_at": to_dt(moves + dynamics.seconds_to_share(tau, 0.5)),
                    "reached_90_at": to_dt(moves + dynamics.seconds_to_share(tau, 0.9)),
                    "stable_at": to_dt(moves + dynamics.seconds_to_share(tau, dynamics.STABLE_SHARE)),
                }
            )
            self._open_truth[i] = cmd.command_id
        _remember(self.truth, cmd.command_id, truth)

    def ground_truth(self, site_id: str | None = None, command_id: str | None = None) -> list[ReactionTruth]:
        """Return the recorded reactions, optionally for one site or one command."""
        return [
            r
            for r in self.truth.values()
            if (site_id is None or r.site_id == site_id)
            and (command_id is None or r.command_id == command_id)
        ]

    # ---- telemetry -----------------------------------------------------------------------------

    def schedule_reports(self, interval_s: float) -> None:
        """Spread the first report of each site over one interval from now (gateways are not in step)."""
        self.next_report_s = self.t + self.rng.uniform(0.0, interval_s, self.p.n)

    def due_reports(self, interval_s: float) -> list[TelemetryReported]:
        """Return a reading for every online site whose report is due now, and schedule its next."""
        due = np.flatnonzero((self.next_report_s <= self.t) & ~self.p.offline)
        self.next_report_s[due] += interval_s * np.maximum(
            1.0, np.ceil((self.t - self.next_report_s[due]) / interval_s)
        )
        self.next_report_s[self.p.offline] = np.inf
        return self.readings(due)

    def readings(self, idx: npt.NDArray[np.intp]) -> list[TelemetryReported]:
        """Return the present reading of the given sites."""
        at = to_dt(self.t)
        power = np.maximum(0.0, self.power_kw()[idx] + self.rng.normal(0.0, POWER_NOISE_KW, idx.size))
        power = np.where(self.power_kw()[idx] > 0.005, power, 0.0)
        running = (self.heat_kw[idx] > 0.05) | self.hp_on[idx]
        supply = np.where(running, self.flow_c()[idx], self.indoor_c[idx] + 2.0)
        ret = thermal.return_temp_c(supply, self.heat_kw[idx], self.indoor_c[idx])
        cols = zip(
            idx.tolist(),
            power.round(3).tolist(),
            self.meter_kwh[idx].round(3).tolist(),
            self.heat_kw[idx].round(3).tolist(),
            supply.round(2).tolist(),
            ret.round(2).tolist(),
            self.indoor_c[idx].round(2).tolist(),
            self.outdoor_c[idx].round(2).tolist(),
            self.hp_on[idx].tolist(),
            (self.boiler_kw[idx] > BOILER_RUNNING_KW).tolist(),
            self.sg[idx].tolist(),
            strict=True,
        )
        return [
            TelemetryReported(
                site_id=self.p.site_ids[i],
                measured_at=at,
                electric_power_kw=pw,
                meter_reading_kwh=meter,
                heat_power_kw=heat,
                supply_temp_c=sup,
                return_temp_c=rt,
                indoor_temp_c=ind,
                outdoor_temp_c=out,
                hp_running=on,
                boiler_running=boil,
                sg_ready_state=sg,
            )
            for i, pw, meter, heat, sup, rt, ind, out, on, boil, sg in cols
        ]


def _remember(store: OrderedDict[str, Any], key: str, value: object) -> None:
    store[key] = value
    while len(store) > MAX_REMEMBERED:
        store.popitem(last=False)
