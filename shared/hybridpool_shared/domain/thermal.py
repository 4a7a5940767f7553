"""A villa's thermal balance and its heat pump's output, vectorised over many houses with numpy.

One lumped capacity per house (document 002: building mass 25–200 Wh/m²K, 80 typical) loses heat
through a loss coefficient UA to the outdoor air; heat pump, boiler and internal gains feed it:
    C · dT_in/dt = Q_hp + Q_boiler + Q_gains − UA · (T_in − T_out).
The heat pump's COP is Lorentz × efficiency (document 003) between its flow temperature, which follows
a heating curve, and the outdoor air, so it falls with outdoor temperature and rises with a lower flow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from hybridpool_shared.domain.cop import COP_MAX, COP_MIN, lorentz_cop

FloatArray = npt.NDArray[np.float64]
MASS_WH_PER_M2K_TYPICAL = 80.0
COMFORT_BAND_K = 2.0
DESIGN_OUTDOOR_C = -12.0
SINK_SPREAD_K = 5.0
SOURCE_SPREAD_K = 5.0
WATER_FLOW_KW_PER_K = 1.05  # ≈ 0.25 kg/s of water: supply − return = heat / this


@dataclass(frozen=True)
class Houses:
    """Thermal parameters of n houses, one array entry per house."""

    ua_kw_per_k: FloatArray
    capacity_kwh_per_k: FloatArray
    setpoint_c: FloatArray
    gains_kw: FloatArray

    def __post_init__(self) -> None:
        n = self.ua_kw_per_k.shape
        if any(a.shape != n for a in (self.capacity_kwh_per_k, self.setpoint_c, self.gains_kw)):
            raise ValueError("every house parameter needs one value per house")
        if np.any(self.ua_kw_per_k <= 0) or np.any(self.capacity_kwh_per_k <= 0):
            raise ValueError("UA and thermal capacity must be positive")


def capacity_kwh_per_k(area_m2: FloatArray, mass_wh_per_m2k: FloatArray | float) -> FloatArray:
    """Return a house's thermal capacity in kWh/K from its heated area and specific mass."""
    result: FloatArray = np.asarray(area_m2, dtype=np.float64) * mass_wh_per_m2k / 1000.0
    return result


def ua_for_design_load(design_load_kw: FloatArray, setpoint_c: FloatArray | float = 20.0) -> FloatArray:
    """Return the loss coefficient (kW/K) of a house needing design_load_kw at −12 °C outdoors."""
    result: FloatArray = np.asarray(design_load_kw, dtype=np.float64) / (setpoint_c - DESIGN_OUTDOOR_C)
    return result


def heat_loss_kw(houses: Houses, indoor_c: FloatArray, outdoor_c: FloatArray) -> FloatArray:
    """Return each house's heat loss to the outdoor air in kW."""
    result: FloatArray = houses.ua_kw_per_k * (indoor_c - outdoor_c)
    return result


def step_indoor_c(
    houses: Houses, indoor_c: FloatArray, outdoor_c: FloatArray, heat_in_kw: FloatArray, dt_h: float
) -> FloatArray:
    """Return indoor temperatures after dt_h hours with heat_in_kw supplied (explicit Euler step)."""
    net = heat_in_kw + houses.gains_kw - heat_loss_kw(houses, indoor_c, outdoor_c)
    result: FloatArray = indoor_c + dt_h * net / houses.capacity_kwh_per_k
    return result


def flow_temp_c(
    outdoor_c: FloatArray, slope: FloatArray | float, base_c: float = 25.0, max_c: float = 60.0
) -> FloatArray:
    """Return the heating curve's flow temperature: base + slope × (20 °C − outdoor), clipped."""
    raw = base_c + np.asarray(slope) * np.maximum(0.0, 20.0 - np.asarray(outdoor_c, dtype=np.float64))
    result: FloatArray = np.clip(raw, base_c, max_c)
    return result


def hp_cop(outdoor_c: FloatArray, flow_c: FloatArray, efficiency: FloatArray | float) -> FloatArray:
    """Return the COP between a flow temperature and the outdoor air: Lorentz × efficiency, clipped."""
    outdoor = np.asarray(outdoor_c, dtype=np.float64)
    flow = np.maximum(np.asarray(flow_c, dtype=np.float64), outdoor + SINK_SPREAD_K + 1.0)
    lorentz = lorentz_cop(flow, flow - SINK_SPREAD_K, outdoor, outdoor - SOURCE_SPREAD_K)
    result: FloatArray = np.clip(np.asarray(efficiency) * lorentz, COP_MIN, COP_MAX)
    return result


def return_temp_c(supply_c: FloatArray, heat_kw: FloatArray, indoor_c: FloatArray) -> FloatArray:
    """Return the return temperature: supply minus the spread the heat flow causes, not below indoor."""
    result: FloatArray = np.maximum(supply_c - heat_kw / WATER_FLOW_KW_PER_K, indoor_c)
    return result


def comfort_bounds_c(houses: Houses) -> tuple[FloatArray, FloatArray]:
    """Return the comfort band (set point ± 2 K) of each house."""
    return houses.setpoint_c - COMFORT_BAND_K, houses.setpoint_c + COMFORT_BAND_K
