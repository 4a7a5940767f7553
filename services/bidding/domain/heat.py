"""Heat demand and thermal storage of a villa, in kW / kWh of heat-pump electric equivalent.

Defaults from the seeds: the HP covers ≥ 50 % of the design load at −12 °C (so design heat = 2 × HP heat),
heating stops at 17 °C outdoors (20 °C set-point minus ~3 K of internal gains), building mass 80 Wh/m²K,
and the comfort band is ±2 °C around the set-point (4 K of usable swing).
"""

from __future__ import annotations

import math

DESIGN_OUTDOOR_C = -12.0
HEATING_LIMIT_C = 17.0
MASS_WH_PER_M2K = 80.0
BAND_K = 4.0
SETPOINT_C = 21.0


def heat_demand_kw(hp_heat_kw: float, outdoor_c: float) -> float:
    """Return the house's heat demand in kW at an outdoor temperature."""
    design = 2.0 * hp_heat_kw
    return max(0.0, design * (HEATING_LIMIT_C - outdoor_c) / (HEATING_LIMIT_C - DESIGN_OUTDOOR_C))


def demand_el_kw(hp_heat_kw: float, cop: float, outdoor_c: float) -> float:
    """Return the HP electric power that would cover the whole demand (may exceed the HP's power)."""
    return heat_demand_kw(hp_heat_kw, outdoor_c) / max(cop, 1.0)


def storage_el_kwh(heated_area_m2: float, cop: float) -> float:
    """Return the thermal mass over the comfort band in kWh of HP electricity."""
    return MASS_WH_PER_M2K * heated_area_m2 * BAND_K / 1000.0 / max(cop, 1.0)


def storage_fill_kwh(indoor_c: float | None, capacity_kwh: float) -> float:
    """Return the stored heat for an indoor temperature (set-point = half full; unknown = half)."""
    if indoor_c is None or math.isnan(indoor_c):
        return capacity_kwh / 2.0
    share = (indoor_c - (SETPOINT_C - BAND_K / 2.0)) / BAND_K
    return min(1.0, max(0.0, share)) * capacity_kwh


def outdoor_forecast_c(mean_c: float, local_hour: float) -> float:
    """Return an outdoor temperature with a ±3 K daily swing (coldest 05:00, warmest 15:00)."""
    return mean_c + 3.0 * math.cos((local_hour - 15.0) / 24.0 * 2.0 * math.pi)
