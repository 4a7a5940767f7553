"""How a heat pump's electric power follows a switch: a dead time, then a first-order approach.

Document 004, Fig. 6: switched off, the HPs drew nothing after ~2 min; switched on, they reached 50 % of
the wanted power after ~4 min and were stable after ~13 min. A dead time d and a time constant τ fit
both: 50 % at d + τ·ln 2 and "stable" (within 5 % of the step) at d + τ·ln 20, so switching on
d ≈ 78 s, τ ≈ 235 s; switching off d ≈ 10 s, τ ≈ 30 s.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
ON_DEAD_S = 78.0
ON_TAU_S = 235.0
OFF_DEAD_S = 10.0
OFF_TAU_S = 30.0
STABLE_SHARE = 0.95


def seconds_to_share(tau_s: float, share: float) -> float:
    """Return the seconds after the dead time until share of the step is reached."""
    return tau_s * math.log(1.0 / (1.0 - share))


def power_at(
    t: FloatArray | float, p_from: FloatArray, p_to: FloatArray, moves_at: FloatArray, tau_s: FloatArray
) -> FloatArray:
    """Return the electric power at time t (epoch s) of transitions from p_from to p_to."""
    elapsed = np.maximum(0.0, np.asarray(t) - moves_at)
    result: FloatArray = p_to + (p_from - p_to) * np.exp(-elapsed / tau_s)
    return result


def energy_kwh(
    t0: float, t1: float, p_from: FloatArray, p_to: FloatArray, moves_at: FloatArray, tau_s: FloatArray
) -> FloatArray:
    """Return the exact electric energy (kWh) drawn over [t0, t1] along each transition."""
    before_s = np.clip(moves_at - t0, 0.0, t1 - t0)
    u0 = np.maximum(t0, moves_at) - moves_at
    u1 = np.maximum(t1, moves_at) - moves_at
    after_kws = p_to * (u1 - u0) + (p_from - p_to) * tau_s * (np.exp(-u0 / tau_s) - np.exp(-u1 / tau_s))
    result: FloatArray = (p_from * before_s + after_kws) / 3600.0
    return result
