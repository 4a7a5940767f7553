"""COP model: Lorentz/Carnot maths and the fit of efficiency and heating curve to a site's data."""

from __future__ import annotations

import numpy as np
import pytest

from hybridpool_shared.domain.cop import (
    CopModel,
    HeatingCurve,
    carnot_cop,
    fit_cop_model,
    log_mean_k,
    lorentz_cop,
)


def test_log_mean_of_equal_temperatures_is_that_temperature() -> None:
    assert float(log_mean_k(35.0, 35.0)) == pytest.approx(308.15)


def test_log_mean_lies_between_its_ends() -> None:
    value = float(log_mean_k(30.0, 40.0))
    assert 303.15 < value < 313.15
    assert value == pytest.approx(10.0 / np.log(313.15 / 303.15))


def test_lorentz_with_zero_spread_equals_carnot() -> None:
    assert float(lorentz_cop(45.0, 45.0, 5.0, 5.0)) == pytest.approx(carnot_cop(45.0, 5.0))


def test_lorentz_beats_carnot_at_the_outlet_temperature() -> None:
    # Heating water 40→45 °C is easier than delivering all heat at 45 °C.
    assert float(lorentz_cop(45.0, 40.0, 7.0, 2.0)) > carnot_cop(45.0, 2.0)


def test_lorentz_refuses_a_source_warmer_than_the_sink() -> None:
    with pytest.raises(ValueError, match="warmer"):
        lorentz_cop(20.0, 15.0, 30.0, 25.0)


def test_default_model_cop_rises_with_outdoor_temperature() -> None:
    cops = CopModel().cop(np.array([-10.0, 0.0, 7.0, 15.0]))
    assert np.all(np.diff(cops) > 0)
    assert 1.5 < cops[0] < 2.6
    assert 3.0 < cops[2] < 4.5


def test_heating_curve_is_clipped() -> None:
    curve = HeatingCurve(base_c=25.0, slope=1.5, max_flow_c=55.0)
    assert curve.flow_c(np.array([-30.0, 25.0])).tolist() == [55.0, 25.0]


def test_fit_recovers_efficiency_and_slope_from_noisy_data() -> None:
    truth = CopModel(efficiency=0.42, curve=HeatingCurve(slope=1.4))
    rng = np.random.default_rng(3)
    outdoor = rng.uniform(-8, 14, 400)
    measured = truth.cop(outdoor) + rng.normal(0, 0.05, outdoor.size)
    fit = fit_cop_model(outdoor, measured, CopModel())
    assert fit.fitted
    assert fit.efficiency == pytest.approx(0.42, abs=0.02)
    assert fit.curve.slope == pytest.approx(1.4, abs=0.15)
    assert fit.samples == 400
    assert fit.r2 is not None
    assert fit.r2 > 0.9
    assert fit.rmse is not None
    assert fit.rmse < 0.08


def test_fit_falls_back_to_the_default_with_too_few_samples() -> None:
    default = CopModel()
    fit = fit_cop_model(np.array([0.0, 5.0]), np.array([2.5, 3.0]), default, min_samples=10)
    assert fit is default
    assert not fit.fitted


def test_fit_ignores_implausible_measurements() -> None:
    outdoor = np.linspace(-5, 10, 120)
    measured = CopModel(efficiency=0.4).cop(outdoor)
    measured[::10] = 50.0  # a meter glitch
    fit = fit_cop_model(outdoor, measured, CopModel(), min_samples=96)
    assert fit.samples == 108
    assert fit.efficiency == pytest.approx(0.4, abs=0.01)


def test_fleet_cop_equals_each_sites_model() -> None:
    from hybridpool_shared.domain.cop import fleet_cop

    models = [CopModel(0.36, HeatingCurve(25.0, 1.0)), CopModel(0.45, HeatingCurve(28.0, 1.6))]
    outdoor = np.array([[-12.0, 0.0, 9.0], [3.0, 15.0, -4.0]])
    result = fleet_cop(
        np.array([m.efficiency for m in models]),
        np.array([m.curve.base_c for m in models]),
        np.array([m.curve.slope for m in models]),
        outdoor,
    )
    for row, model in enumerate(models):
        assert result[row].tolist() == pytest.approx(model.cop(outdoor[row]).tolist())
