"""`hybridpool balance-price`: what-if balance prices for explicit inputs, printed as JSON."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from hybridpool_cli.main import app

RUNNER = CliRunner()


def run(*args: str) -> dict[str, object]:
    result = RUNNER.invoke(app, ["balance-price", *args])
    assert result.exit_code == 0, result.output
    data: dict[str, object] = json.loads(result.output)
    return data


def test_document_004_january_from_its_implied_tariff() -> None:
    # 6 DKK/m³ at 11.5 kWh/m³ and 100 %: 0.522 DKK/kWh heat; adders 0.937 DKK/kWh (docs/balance-price.md).
    out = run("--cop", "2.46", "--gas-price-per-m3", "6", "--kwh-per-m3", "11.5", "--boiler-efficiency", "1",
              "--adders-per-mwh", "937.4")  # fmt: skip
    assert out["balance_price_per_mwh"] == pytest.approx(347.0, abs=1.5)


def test_cop_from_outdoor_and_flow_temperatures_and_a_decision() -> None:
    warm = run("--outdoor-c", "7", "--flow-c", "35", "--spot-per-mwh", "300")
    cold = run("--outdoor-c", "-7", "--flow-c", "55", "--spot-per-mwh", "300")
    assert float(warm["cop"]) > float(cold["cop"])  # type: ignore[arg-type]
    assert warm["lorentz_cop"] == pytest.approx(float(warm["cop"]) / 0.36, rel=1e-3)  # type: ignore[arg-type]
    assert cold["preferred_source"] == "gas"


def test_missing_cop_inputs_are_a_clear_error() -> None:
    result = RUNNER.invoke(app, ["balance-price", "--outdoor-c", "5"])
    assert result.exit_code != 0
    assert "--flow-c" in result.output
