"""Balance price: the spot price at which heat-pump heat and gas heat cost the same."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class GasTariff:
    """What a cubic metre of gas costs and yields, and the electricity adders on top of spot."""

    gas_price_eur_per_m3: float
    gas_kwh_per_m3: float
    boiler_efficiency: float
    electricity_adders_eur_per_mwh: float

    def __post_init__(self) -> None:
        if self.gas_kwh_per_m3 <= 0 or not 0 < self.boiler_efficiency <= 1.1:
            raise ValueError("calorific value must be > 0 and boiler efficiency in (0, 1.1]")

    @property
    def gas_heat_price_eur_per_mwh(self) -> float:
        """Return the cost of one MWh of heat from the boiler."""
        return self.gas_price_eur_per_m3 / (self.gas_kwh_per_m3 * self.boiler_efficiency) * 1000


def balance_price_eur_per_mwh(cop: float, tariff: GasTariff) -> float:
    """Return the spot price below which the heat pump is cheaper than gas."""
    if cop <= 0:
        raise ValueError("COP must be positive")
    return cop * tariff.gas_heat_price_eur_per_mwh - tariff.electricity_adders_eur_per_mwh


def balance_prices(cop: FloatArray, gas_heat_price: FloatArray, adders: FloatArray) -> FloatArray:
    """Vectorised balance prices (EUR/MWh) for arrays that broadcast (sites × quarters)."""
    result: FloatArray = cop * gas_heat_price - adders
    return result
