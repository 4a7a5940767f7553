"""Balance service domain: tariffs with effective dates, COP forecast and fallbacks, messages, summary."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from hybridpool_shared.domain.cop import CopModel, HeatingCurve
from hybridpool_shared.messages import DayAheadPriceIngested, HeatSource
from services.balance.domain import (
    CopPolicy,
    OutdoorReading,
    TariffDefaults,
    TariffVersion,
    balance_matrix,
    cop_matrix,
    outdoor_forecast,
    quarters,
    resolve_tariffs,
    summary,
    to_messages,
)
from services.balance.engine import expand_price

T0 = datetime(2026, 1, 14, 23, 0, tzinfo=UTC)  # 00:00 Copenhagen (winter)
STARTS = quarters(T0, T0 + timedelta(days=1))
DEFAULTS = TariffDefaults(0.80, 11.0, 135.0)
POLICY = CopPolicy(3.0, CopModel(0.36, HeatingCurve(25.0, 1.0)), None, timedelta(hours=48))


def test_a_copenhagen_day_has_96_quarters_in_january() -> None:
    assert len(STARTS) == 96


def test_defaults_apply_without_versions() -> None:
    tariffs = resolve_tariffs(["a"], np.array([0.9]), STARTS, [], DEFAULTS)
    assert tariffs.gas_heat_eur_per_mwh[0, 0] == pytest.approx(0.80 / (11.0 * 0.9) * 1000)
    assert np.all(tariffs.adders_eur_per_mwh == 135.0)


def test_versions_take_effect_from_their_date_and_site_versions_win() -> None:
    noon = T0 + timedelta(hours=12)
    versions = [
        TariffVersion(effective_from=noon, gas_price_eur_per_m3=1.10, electricity_adders_eur_per_mwh=150.0),
        TariffVersion(
            scope="b", effective_from=T0, gas_price_eur_per_m3=0.60, electricity_adders_eur_per_mwh=90.0
        ),
        TariffVersion(
            effective_from=T0 - timedelta(days=30),
            gas_price_eur_per_m3=0.70,
            electricity_adders_eur_per_mwh=120,
        ),
    ]
    tariffs = resolve_tariffs(["a", "b"], np.array([1.0, 1.0]), STARTS, versions, DEFAULTS)
    before, after = STARTS.index(noon) - 1, STARTS.index(noon)
    assert tariffs.gas_heat_eur_per_mwh[0, before] == pytest.approx(0.70 / 11.0 * 1000)
    assert tariffs.gas_heat_eur_per_mwh[0, after] == pytest.approx(1.10 / 11.0 * 1000)
    assert tariffs.adders_eur_per_mwh[0, after] == 150.0
    assert np.all(tariffs.adders_eur_per_mwh[1] == 90.0)


def test_hourly_grid_tariff_follows_copenhagen_local_hours() -> None:
    hourly = tuple(300.0 if 17 <= h < 21 else 50.0 for h in range(24))
    version = TariffVersion(
        effective_from=T0,
        gas_price_eur_per_m3=0.8,
        electricity_adders_eur_per_mwh=100.0,
        hourly_tariff_eur_per_mwh=hourly,
    )
    adders = resolve_tariffs(["a"], np.array([0.95]), STARTS, [version], DEFAULTS).adders_eur_per_mwh[0]
    peak = STARTS.index(T0 + timedelta(hours=17))  # 17:00 local
    assert adders[peak] == 400.0
    assert adders[peak - 1] == 150.0


def test_hourly_tariff_needs_24_values() -> None:
    with pytest.raises(ValueError, match="24 values"):
        TariffVersion(
            effective_from=T0,
            gas_price_eur_per_m3=1,
            electricity_adders_eur_per_mwh=1,
            hourly_tariff_eur_per_mwh=(1.0,),
        )


def test_cop_falls_back_to_the_default_without_any_temperature() -> None:
    outdoor = outdoor_forecast([None], STARTS, T0, POLICY)
    assert np.all(cop_matrix([None], outdoor, POLICY) == 3.0)


def test_recent_reading_is_persisted_and_stale_one_ignored() -> None:
    fresh = OutdoorReading(-5.0, T0 - timedelta(hours=1))
    stale = OutdoorReading(-5.0, T0 - timedelta(days=5))
    outdoor = outdoor_forecast([fresh, stale], STARTS, T0, POLICY)
    assert np.all(outdoor[0] == -5.0)
    assert np.all(np.isnan(outdoor[1]))
    cop = cop_matrix([None, None], outdoor, POLICY)
    assert cop[0, 0] == pytest.approx(float(POLICY.type_model.cop(-5.0)))
    assert cop[0, 0] < 3.0


def test_seasonal_default_is_used_when_configured() -> None:
    seasonal = CopPolicy(3.0, POLICY.type_model, tuple(float(m) for m in range(12)), timedelta(hours=48))
    outdoor = outdoor_forecast([None], STARTS, T0, seasonal)
    assert np.all(outdoor == 0.0)  # January in Copenhagen


def test_a_fitted_model_beats_the_type_default() -> None:
    fitted = CopModel(0.5, HeatingCurve(25.0, 0.8), fitted=True, samples=200)
    outdoor = np.full((2, 1), 5.0)
    cop = cop_matrix([fitted, None], outdoor, POLICY)
    assert cop[0, 0] > cop[1, 0]


def test_decision_messages_and_saving() -> None:
    cop = np.full((1, 2), 3.0)
    tariffs = resolve_tariffs(["a"], np.array([0.9]), STARTS[:2], [], DEFAULTS)
    matrix = balance_matrix(cop, tariffs, np.array([40.0, np.nan]))
    first, second = to_messages(matrix, ["a"], ["DK1"], STARTS[:2])
    balance = 3.0 * 0.80 / (11.0 * 0.9) * 1000 - 135.0
    assert first.balance_price_eur_per_mwh == pytest.approx(balance, abs=1e-4)
    assert first.preferred_source is HeatSource.HEAT_PUMP
    assert first.saving_eur_per_mwh_heat == pytest.approx((balance - 40.0) / 3.0, abs=1e-4)
    assert second.spot_price_eur_per_mwh is None
    assert second.preferred_source is None


def test_portfolio_summary_counts_sites_preferring_gas() -> None:
    cop = np.array([[2.0, 2.0], [4.0, 4.0]])
    tariffs = resolve_tariffs(["a", "b"], np.array([1.0, 1.0]), STARTS[:2], [], DEFAULTS)
    # Balance prices: a = 2·72.7−135 ≈ 10.5, b ≈ 155.9 EUR/MWh.
    result = summary(balance_matrix(cop, tariffs, np.array([100.0, 5.0])), STARTS[:2])
    counts = [(q["prefer_gas"], q["prefer_heat_pump"]) for q in result["per_quarter"]]  # type: ignore[attr-defined]
    assert counts == [(1, 1), (0, 2)]
    assert result["sites"] == 2


def test_hourly_and_dkk_prices_expand_to_quarters_in_eur() -> None:
    price = DayAheadPriceIngested(
        area="DK1",
        interval_start=T0,
        interval_end=T0 + timedelta(hours=1),
        interval_minutes=60,
        price_dkk_per_mwh=746.0,
        source="test",
        ingested_at=T0,
    )
    expanded = expand_price(price, dkk_per_eur=7.46)
    assert list(expanded) == STARTS[:4]
    assert set(expanded.values()) == {100.0}


def test_portfolio_summary_of_an_empty_fleet_still_lists_the_quarters() -> None:
    outdoor = outdoor_forecast([], STARTS[:2], T0, POLICY)
    tariffs = resolve_tariffs([], np.array([]), STARTS[:2], [], DEFAULTS)
    result = summary(
        balance_matrix(cop_matrix([], outdoor, POLICY), tariffs, np.array([1.0, np.nan])), STARTS[:2]
    )
    quarters_out = result["per_quarter"]
    assert [q["spot_eur_per_mwh"] for q in quarters_out] == [1.0, None]  # type: ignore[attr-defined]
    assert result["sites"] == 0
