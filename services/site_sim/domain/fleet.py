"""A simulated fleet's master data (HP-Hub 101–109) and hidden physical parameters, drawn per seed.

Ranges: villas with 1–5 kW electric heat pumps (3–12 kW heat) and 20–35 kW gas boilers (document 004's
villa unit: 5 kW HP + 33 kW boiler); optional larger buildings like the report's school. The house's
design load at −12 °C is 0.8–1.4 × the HP's heat power (the HP covers ≥ 50 % of it, document 002).
Reaction delays are drawn around document 004's measurement; a share of sites is slow, a few are
unresponsive (they ack but the relay does nothing) and a few offline (no telemetry, no acks).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

from hybridpool_shared.domain.thermal import Houses, capacity_kwh_per_k, ua_for_design_load
from hybridpool_shared.messages import ControlOption, SiteLocation, SiteMasterDataChanged
from services.site_sim.domain import dynamics

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
SLOW_SHARE = 0.1
UNRESPONSIVE_SHARE = 0.02
OFFLINE_SHARE = 0.01


@dataclass(frozen=True)
class FleetParams:
    """Everything the simulator knows about n sites, one array entry per site."""

    site_ids: list[str]
    houses: Houses
    hp_el_kw: FloatArray
    hp_heat_max_kw: FloatArray
    boiler_kw: FloatArray
    min_run_s: FloatArray
    lockout_s: FloatArray
    cop_efficiency: FloatArray
    curve_slope: FloatArray
    outdoor_offset_k: FloatArray
    on_dead_s: FloatArray
    on_tau_s: FloatArray
    off_dead_s: FloatArray
    off_tau_s: FloatArray
    unresponsive: BoolArray
    offline: BoolArray
    master: list[SiteMasterDataChanged]

    @property
    def n(self) -> int:
        """Return the number of sites."""
        return len(self.site_ids)


def _lognormal(rng: np.random.Generator, median: float, sigma: float, n: int) -> FloatArray:
    result: FloatArray = median * rng.lognormal(0.0, sigma, n)
    return result


def _reaction(rng: np.random.Generator, n: int) -> tuple[FloatArray, ...]:
    slow = np.where(rng.random(n) < SLOW_SHARE, rng.uniform(1.8, 3.0, n), 1.0)
    return (
        _lognormal(rng, dynamics.ON_DEAD_S, 0.3, n) * slow,
        _lognormal(rng, dynamics.ON_TAU_S, 0.25, n) * slow,
        _lognormal(rng, dynamics.OFF_DEAD_S, 0.3, n) * slow,
        _lognormal(rng, dynamics.OFF_TAU_S, 0.25, n) * slow,
    )


def _sizes(rng: np.random.Generator, villas: int, buildings: int) -> dict[str, FloatArray]:
    el = np.concatenate([rng.uniform(1.0, 5.0, villas), rng.uniform(10.0, 40.0, buildings)]).round(1)
    heat = np.concatenate(
        [np.clip(el[:villas] * rng.uniform(2.4, 3.2, villas), 3.0, 12.0), el[villas:] * 3.0]
    ).round(1)
    boiler = np.concatenate([rng.uniform(20.0, 35.0, villas), rng.uniform(50.0, 150.0, buildings)]).round(1)
    area = np.concatenate([rng.uniform(100.0, 220.0, villas), rng.uniform(1000.0, 3000.0, buildings)]).round()
    return {"el": el, "heat": heat, "boiler": boiler, "area": area}


def generate(
    villas: int, *, buildings: int = 0, seed: int = 42, changed_at: datetime, prefix: str = "sim-villa"
) -> FleetParams:
    """Draw a fleet of villas (and optionally larger buildings) with master data and physics."""
    n = villas + buildings
    rng = np.random.default_rng(seed)
    size = _sizes(rng, villas, buildings)
    setpoint = rng.choice([20.0, 20.5, 21.0, 21.5, 22.0], n)
    houses = Houses(
        ua_kw_per_k=ua_for_design_load(size["heat"] * rng.uniform(0.8, 1.4, n), setpoint),
        capacity_kwh_per_k=capacity_kwh_per_k(size["area"], rng.uniform(60.0, 100.0, n)),
        setpoint_c=setpoint,
        gains_kw=size["area"] * rng.uniform(0.002, 0.004, n),
    )
    min_run = rng.choice([10, 15, 15, 15, 15, 20], n).astype(np.float64) * 60.0
    lockout = rng.choice([10, 15, 15, 15, 15, 20], n).astype(np.float64) * 60.0
    ids = [f"{prefix}-{i:05d}" if i < villas else f"sim-building-{i - villas:04d}" for i in range(n)]
    on_dead, on_tau, off_dead, off_tau = _reaction(rng, n)
    draw = rng.random(n)
    params = FleetParams(
        site_ids=ids,
        houses=houses,
        hp_el_kw=size["el"],
        hp_heat_max_kw=size["heat"],
        boiler_kw=size["boiler"],
        min_run_s=min_run,
        lockout_s=lockout,
        cop_efficiency=rng.uniform(0.32, 0.42, n),
        curve_slope=rng.uniform(0.6, 1.2, n),
        outdoor_offset_k=rng.normal(0.0, 0.8, n),
        on_dead_s=on_dead,
        on_tau_s=on_tau,
        off_dead_s=off_dead,
        off_tau_s=off_tau,
        unresponsive=draw < UNRESPONSIVE_SHARE,
        offline=(draw >= UNRESPONSIVE_SHARE) & (draw < UNRESPONSIVE_SHARE + OFFLINE_SHARE),
        master=[],
    )
    params.master.extend(_master(params, rng, size["area"], changed_at))
    return params


def _master(
    p: FleetParams, rng: np.random.Generator, area: FloatArray, changed_at: datetime
) -> list[SiteMasterDataChanged]:
    lat = rng.uniform(54.8, 57.6, p.n)
    lon = rng.uniform(8.1, 12.6, p.n)
    relay = rng.random(p.n) < 0.2
    dhw = rng.choice([150.0, 200.0, 250.0], p.n)
    buffer = rng.choice([0.0, 0.0, 50.0, 100.0, 200.0], p.n)
    return [
        SiteMasterDataChanged(
            site_id=site_id,
            make_model="Simulated hybrid HP (air/water + gas)",
            location=SiteLocation(
                address=f"Simulated {site_id}",
                latitude_deg=round(float(lat[i]), 5),
                longitude_deg=round(float(lon[i]), 5),
                price_area="DK1" if lon[i] < 11.0 else "DK2",
            ),
            hp_heat_power_kw=float(p.hp_heat_max_kw[i]),
            hp_electric_power_kw=float(p.hp_el_kw[i]),
            boiler_power_kw=float(p.boiler_kw[i]),
            boiler_efficiency=0.95,
            min_run_minutes=int(p.min_run_s[i] // 60),
            lockout_minutes=int(p.lockout_s[i] // 60),
            dhw_tank_l=float(dhw[i]),
            buffer_tank_l=float(buffer[i]),
            control_options=(ControlOption.ON_OFF_RELAY,) if relay[i] else (ControlOption.SG_READY,),
            meter_number=f"SIM{i:09d}",
            heated_area_m2=float(area[i]),
            changed_at=changed_at,
        )
        for i, site_id in enumerate(p.site_ids)
    ]
