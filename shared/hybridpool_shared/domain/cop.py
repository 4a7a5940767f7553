"""Heat-pump COP: Lorentz (Carnot with log-mean temperatures) × an efficiency, and its fit to data.

Document 003: Lorentz COP = T_lm,hot / (T_lm,hot − T_lm,cold), temperatures in kelvin as log means
of the in- and outlet of each side; a real machine reaches a fraction (the efficiency) of it.
A site's flow temperature follows its heating curve, so COP is a function of outdoor temperature.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
KELVIN = 273.15
COP_MIN = 1.0
COP_MAX = 8.0


@dataclass(frozen=True)
class HeatingCurve:
    """Flow temperature as a function of outdoor temperature: base + slope × (20 °C − outdoor)."""

    base_c: float = 25.0
    slope: float = 1.0
    min_flow_c: float = 25.0
    max_flow_c: float = 65.0

    def flow_c(self, outdoor_c: FloatArray | float) -> FloatArray:
        """Return the flow (supply) temperature in °C for outdoor temperatures in °C."""
        raw = self.base_c + self.slope * np.maximum(0.0, 20.0 - np.asarray(outdoor_c, dtype=np.float64))
        return np.clip(raw, self.min_flow_c, self.max_flow_c)


@dataclass(frozen=True)
class CopModel:
    """A site's COP model: Lorentz COP of its heating curve × an efficiency, with fit quality."""

    efficiency: float = 0.36
    curve: HeatingCurve = HeatingCurve()
    hot_spread_k: float = 5.0
    cold_spread_k: float = 5.0
    fitted: bool = False
    samples: int = 0
    r2: float | None = None
    rmse: float | None = None

    def cop(self, outdoor_c: FloatArray | float) -> FloatArray:
        """Return the expected COP at outdoor temperatures (°C), clipped to a plausible range."""
        flow = self.curve.flow_c(outdoor_c)
        lorentz = lorentz_cop(
            flow, flow - self.hot_spread_k, outdoor_c, np.asarray(outdoor_c) - self.cold_spread_k
        )
        return np.clip(self.efficiency * lorentz, COP_MIN, COP_MAX)


def log_mean_k(in_c: FloatArray | float, out_c: FloatArray | float) -> FloatArray:
    """Return the log-mean temperature in kelvin of a stream between two temperatures in °C."""
    a = np.asarray(in_c, dtype=np.float64) + KELVIN
    b = np.asarray(out_c, dtype=np.float64) + KELVIN
    equal = np.abs(a - b) < 1e-9
    log_ratio = np.log(np.where(equal, np.e, a / b))
    result: FloatArray = np.where(equal, a, (a - b) / log_ratio)
    return result


def lorentz_cop(
    hot_out_c: FloatArray | float,
    hot_in_c: FloatArray | float,
    cold_in_c: FloatArray | float,
    cold_out_c: FloatArray | float,
) -> FloatArray:
    """Return the Lorentz COP for a sink heated from hot_in to hot_out and a source cooled in→out."""
    hot = log_mean_k(hot_in_c, hot_out_c)
    cold = log_mean_k(cold_in_c, cold_out_c)
    lift = hot - cold
    if np.any(lift <= 0):
        raise ValueError("the sink must be warmer than the source")
    result: FloatArray = hot / lift
    return result


def carnot_cop(flow_c: float, source_c: float) -> float:
    """Return the Carnot heating COP between a sink and a source temperature (°C)."""
    if flow_c <= source_c:
        raise ValueError("the sink must be warmer than the source")
    return (flow_c + KELVIN) / (flow_c - source_c)


SLOPE_GRID = np.round(np.arange(0.3, 2.01, 0.05), 2)


def fit_cop_model(
    outdoor_c: FloatArray, cop_measured: FloatArray, default: CopModel, min_samples: int = 96
) -> CopModel:
    """Fit efficiency and heating-curve slope to measured (outdoor, COP) pairs; default if too few.

    For each slope on a grid the best efficiency has a closed form (least squares through the
    origin on the Lorentz COP); the slope with the least squared error wins.
    """
    ok = (
        np.isfinite(outdoor_c)
        & np.isfinite(cop_measured)
        & (cop_measured >= COP_MIN)
        & (cop_measured <= COP_MAX)
    )
    x, y = outdoor_c[ok], cop_measured[ok]
    if x.size < min_samples:
        return default
    best: tuple[float, float, float] | None = None
    for slope in SLOPE_GRID:
        curve = HeatingCurve(
            default.curve.base_c, float(slope), default.curve.min_flow_c, default.curve.max_flow_c
        )
        flow = curve.flow_c(x)
        lor = lorentz_cop(flow, flow - default.hot_spread_k, x, x - default.cold_spread_k)
        eff = float(np.dot(lor, y) / np.dot(lor, lor))
        sse = float(np.sum((eff * lor - y) ** 2))
        if best is None or sse < best[2]:
            best = (float(slope), eff, sse)
    assert best is not None
    slope, eff, sse = best
    total = float(np.sum((y - y.mean()) ** 2))
    return CopModel(
        efficiency=round(min(max(eff, 0.05), 0.9), 4),
        curve=HeatingCurve(default.curve.base_c, slope, default.curve.min_flow_c, default.curve.max_flow_c),
        hot_spread_k=default.hot_spread_k,
        cold_spread_k=default.cold_spread_k,
        fitted=True,
        samples=int(x.size),
        r2=round(1.0 - sse / total, 4) if total > 0 else None,
        rmse=round(float(np.sqrt(sse / x.size)), 4),
    )


def fleet_cop(
    efficiency: FloatArray,
    curve_base_c: FloatArray,
    curve_slope: FloatArray,
    outdoor_c: FloatArray,
    spread_k: float = 5.0,
    min_flow_c: float = 25.0,
    max_flow_c: float = 65.0,
) -> FloatArray:
    """Vectorised COP for many sites (rows) × intervals (columns): per-site efficiency and curve."""
    eff = efficiency[:, None]
    flow = np.clip(
        curve_base_c[:, None] + curve_slope[:, None] * np.maximum(0.0, 20.0 - outdoor_c),
        min_flow_c,
        max_flow_c,
    )
    hot = log_mean_k(flow - spread_k, flow)
    cold = log_mean_k(outdoor_c, outdoor_c - spread_k)
    result: FloatArray = np.clip(eff * hot / np.maximum(hot - cold, 1.0), COP_MIN, COP_MAX)
    return result
