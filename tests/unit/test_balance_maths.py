"""Balance-price maths, checked against document 004's monthly table (DGC report, school, 2019)."""

from __future__ import annotations

import numpy as np
import pytest

from hybridpool_shared.domain.balance import (
    GasTariff,
    balance_price_eur_per_mwh,
    balance_prices,
    gas_heat_price,
    heat_pump_preferred,
    implied_tariff,
    saving_per_mwh_heat,
)

# Month: (average COP, spot balance price in DKK/kWh) from document 004, Figure 15's table.
TABLE_004 = {
    "Jan": (2.46, 0.347),
    "Feb": (3.01, 0.632),
    "Mar": (3.37, 0.824),
    "Apr": (3.38, 0.826),
    "May": (3.40, 0.835),
    "Jun": (3.06, 0.659),
    "Jul": (2.81, 0.530),
    "Aug": (3.25, 0.759),
    "Sep": (3.19, 0.727),
    "Oct": (3.61, 0.947),
    "Nov": (3.15, 0.706),
    "Dec": (3.04, 0.647),
}
COP = np.array([c for c, _ in TABLE_004.values()])
BALANCE = np.array([b for _, b in TABLE_004.values()])


def test_document_004_implied_tariff_matches_its_stated_prices() -> None:
    gas_heat, adders = implied_tariff(COP, BALANCE)
    # The report: 6 DKK/m³ ≈ 0.55 DKK/kWh heat at 100 %; total electricity price 1.26 DKK/kWh,
    # of which 0.32 is the energy price, so tariffs and taxes ≈ 0.94 DKK/kWh.
    assert gas_heat == pytest.approx(0.52, abs=0.03)
    assert adders == pytest.approx(1.26 - 0.32, abs=0.01)


def test_document_004_table_is_reproduced_within_rounding() -> None:
    gas_heat, adders = implied_tariff(COP, BALANCE)
    # Expressed as a gas tariff: ≈ 6.0 DKK/m³ at 11.5 kWh/m³ and 100 % boiler efficiency.
    tariff = GasTariff(gas_heat * 11.5, 11.5, 1.0, adders * 1000)
    assert tariff.gas_price_eur_per_m3 == pytest.approx(6.0, abs=0.01)
    # The table's COPs are rounded to 0.01 and its prices to 0.001 DKK/kWh.
    tolerance = 0.005 * gas_heat + 0.0005
    for month, (cop, expected) in TABLE_004.items():
        computed = balance_price_eur_per_mwh(cop, tariff) / 1000  # currency per MWh → per kWh
        assert computed == pytest.approx(expected, abs=tolerance), month


def test_vectorised_prices_equal_scalar_ones() -> None:
    tariff = GasTariff(0.8, 11.0, 0.9, 135.0)
    cop = np.array([[2.5, 3.0], [3.5, 4.0]])
    heat = gas_heat_price(np.full_like(cop, 0.8), np.full_like(cop, 11.0), np.full_like(cop, 0.9))
    vector = balance_prices(cop, heat, np.full_like(cop, 135.0))
    scalar = [[balance_price_eur_per_mwh(float(c), tariff) for c in row] for row in cop]
    assert vector.ravel().tolist() == pytest.approx([v for row in scalar for v in row])


def test_decision_and_saving() -> None:
    balance = np.array([100.0, 100.0])
    spot = np.array([40.0, 160.0])
    cop = np.array([3.0, 3.0])
    assert heat_pump_preferred(spot, balance).tolist() == [True, False]
    assert saving_per_mwh_heat(spot, balance, cop).tolist() == pytest.approx([20.0, 20.0])


def test_tariff_refuses_impossible_efficiency() -> None:
    with pytest.raises(ValueError, match="efficiency"):
        GasTariff(0.8, 11.0, 0.0, 135.0)
