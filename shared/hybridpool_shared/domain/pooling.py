"""Pool maths shared by bidding, market simulation and dispatch: the availability margin and reserve prices.

The margin rule: each unit i that can switch delivers response_i × power_i with probability
availability_i and nothing otherwise (offline, refused, too slow). The pool's deliverable power is then a
sum of independent Bernoulli terms with mean μ = Σ a·r·P and variance σ² = Σ a(1−a)(r·P)². A capacity B is
offered only if B ≤ μ − z·σ, i.e. the pool delivers at least B with ≈ Φ(z) probability (normal
approximation; z = 2.326 → 99 %).
"""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np
import numpy.typing as npt

from hybridpool_shared.timeutil import COPENHAGEN, require_utc

FloatArray = npt.NDArray[np.float64]
DEFAULT_Z = 2.326
MW_STEP = 0.1


def guaranteed_mw(power_kw: FloatArray, availability: FloatArray, response: FloatArray, z: float) -> float:
    """Return μ − z·σ in MW for the switchable units given (the margin rule above)."""
    delivered = np.asarray(response, dtype=np.float64) * np.asarray(power_kw, dtype=np.float64) / 1000.0
    avail = np.asarray(availability, dtype=np.float64)
    mean = float(np.sum(avail * delivered))
    sigma = math.sqrt(float(np.sum(avail * (1.0 - avail) * delivered**2)))
    return max(0.0, mean - z * sigma)


def floor_to_step(mw: float, step: float = MW_STEP) -> float:
    """Round a capacity down to the market's step (0.1 MW), robust to float noise."""
    return round(math.floor(mw / step + 1e-9) * step, 6)


def synthetic_reserve_price_eur_per_mw_h(product: str, start: datetime) -> float:
    """A documented synthetic capacity price when no auction data exist.

    FCR-N/FCR-D DK2 and FCR DK1 clear around 15–30 EUR/MW/h with an evening peak; this series is a
    base level per product plus a daily cosine peaking at 18:00 Copenhagen time, deterministic in time.
    """
    base = {"fcr_n": 22.0, "fcr_dk1": 18.0, "fcr_d_up": 6.0, "fcr_d_down": 2.0, "mfrr_capacity": 5.0}
    level = base.get(product, 10.0)
    local = require_utc(start).astimezone(COPENHAGEN)
    hour = local.hour + local.minute / 60.0
    return round(level * (1.0 + 0.35 * math.cos((hour - 18.0) / 24.0 * 2.0 * math.pi)), 2)


def guaranteed_mw_per_quarter(
    power_kw: FloatArray,
    availability: FloatArray,
    response: FloatArray,
    capable: npt.NDArray[np.bool_],
    z: float,
) -> FloatArray:
    """Vectorised margin rule: μ − z·σ in MW for each column of a (sites × quarters) capability matrix."""
    delivered = np.asarray(response, dtype=np.float64) * np.asarray(power_kw, dtype=np.float64) / 1000.0
    avail = np.asarray(availability, dtype=np.float64)
    mask = capable.astype(np.float64)
    mean = (avail * delivered) @ mask
    sigma = np.sqrt((avail * (1.0 - avail) * delivered**2) @ mask)
    result: FloatArray = np.maximum(0.0, mean - z * sigma)
    return result
