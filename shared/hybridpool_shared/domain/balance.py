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


def gas_heat_price(
    gas_price_per_m3: FloatArray, kwh_per_m3: FloatArray, boiler_efficiency: FloatArray
) -> FloatArray:
    """Vectorised cost of one MWh of boiler heat (currency per MWh) from gas price per m³."""
    result: FloatArray = gas_price_per_m3 / (kwh_per_m3 * boiler_efficiency) * 1000.0
    return result


def heat_pump_preferred(spot: FloatArray, balance: FloatArray) -> npt.NDArray[np.bool_]:
    """Return True where the heat pump is cheaper: the spot price is below the balance price."""
    result: npt.NDArray[np.bool_] = spot < balance
    return result


def saving_per_mwh_heat(spot: FloatArray, balance: FloatArray, cop: FloatArray) -> FloatArray:
    """Return what the cheaper source saves per MWh of heat: |balance − spot| / COP.

    One MWh of heat takes 1/COP MWh of electricity, so the spot-price gap scales by 1/COP.
    """
    result: FloatArray = np.abs(balance - spot) / cop
    return result


def implied_tariff(cop: FloatArray, balance: FloatArray) -> tuple[float, float]:
    """Return (gas heat price, adders) that best explain balance prices given COPs (least squares)."""
    design = np.column_stack([cop, -np.ones_like(cop)])
    (gas_heat, adders), *_ = np.linalg.lstsq(design, balance, rcond=None)
    return float(gas_heat), float(adders)
