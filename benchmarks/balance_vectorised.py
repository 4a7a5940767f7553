"""How long balance prices for a whole fleet × one day of quarter-hours take, vectorised with numpy.

Times the pure pipeline the balance service runs per price batch: outdoor forecast → per-site COP
(each site its own efficiency and heating curve) → tariff resolution with effective dates and an
hourly grid tariff → balance price, HP-or-gas decision and saving. Sites are processed in chunks
(as the service does) so memory stays bounded. Prints the median of --repeats runs and the speed-up
over a plain Python loop (timed on a sample and extrapolated).

Run: `python -m benchmarks.balance_vectorised [--sites 100000] [--quarters 96] [--repeats 5]`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime, timedelta

import numpy as np

from hybridpool_shared.domain.balance import GasTariff, balance_price_eur_per_mwh
from hybridpool_shared.domain.cop import CopModel, HeatingCurve
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
)

T0 = datetime(2026, 1, 14, 23, 0, tzinfo=UTC)
POLICY = CopPolicy(3.0, CopModel(), None, timedelta(hours=48))
DEFAULTS = TariffDefaults(0.80, 11.0, 135.0)
CHUNK = 10_000


def fleet(sites: int, seed: int = 7) -> dict[str, object]:
    """A synthetic fleet: ids, boiler efficiencies, fitted models, outdoor readings, tariffs."""
    rng = np.random.default_rng(seed)
    ids = [f"villa-{i:06d}" for i in range(sites)]
    models = [
        CopModel(float(e), HeatingCurve(25.0, float(s)), fitted=True)
        for e, s in zip(rng.uniform(0.3, 0.5, sites), rng.uniform(0.6, 1.6, sites), strict=True)
    ]
    temps = rng.normal(2.0, 4.0, sites)
    readings = [OutdoorReading(float(t), T0 - timedelta(minutes=15)) for t in temps]
    hourly = tuple(60.0 if 17 <= h < 21 else 20.0 for h in range(24))
    versions = [
        TariffVersion(
            effective_from=T0 - timedelta(days=90),
            gas_price_eur_per_m3=0.85,
            electricity_adders_eur_per_mwh=120.0,
            hourly_tariff_eur_per_mwh=hourly,
        ),
        TariffVersion(
            effective_from=T0 + timedelta(hours=12),
            gas_price_eur_per_m3=0.90,
            electricity_adders_eur_per_mwh=125.0,
            hourly_tariff_eur_per_mwh=hourly,
        ),
        *(
            TariffVersion(
                scope=ids[i],
                effective_from=T0,
                gas_price_eur_per_m3=0.70,
                electricity_adders_eur_per_mwh=110.0,
            )
            for i in range(0, sites, 1000)
        ),
    ]
    return {
        "ids": ids,
        "efficiency": rng.uniform(0.85, 1.0, sites),
        "models": models,
        "readings": readings,
        "versions": versions,
    }


def vectorised(data: dict[str, object], starts: list[datetime], spot: np.ndarray) -> int:
    """Run the service's pipeline over the fleet in chunks; return how many sites prefer gas in total."""
    ids: list[str] = data["ids"]  # type: ignore[assignment]
    gas = 0
    for first in range(0, len(ids), CHUNK):
        part = slice(first, first + CHUNK)
        outdoor = outdoor_forecast(data["readings"][part], starts, T0, POLICY)  # type: ignore[index]
        cop = cop_matrix(data["models"][part], outdoor, POLICY)  # type: ignore[index]
        tariffs = resolve_tariffs(ids[part], data["efficiency"][part], starts, data["versions"], DEFAULTS)  # type: ignore[index, arg-type]
        matrix = balance_matrix(cop, tariffs, spot)
        gas += int((~matrix.heat_pump).sum())
    return gas


def scalar_per_element_s(
    data: dict[str, object], starts: list[datetime], spot: np.ndarray, n: int = 2000
) -> float:
    """Seconds per site × quarter for a plain Python loop (single-site COP, one tariff)."""
    models: list[CopModel] = data["models"]  # type: ignore[assignment]
    readings: list[OutdoorReading] = data["readings"]  # type: ignore[assignment]
    began = time.perf_counter()
    count = 0
    for row in range(min(n, len(models))):
        tariff = GasTariff(0.85, 11.0, float(data["efficiency"][row]), 120.0)  # type: ignore[index]
        for col in range(len(starts)):
            cop = float(models[row].cop(readings[row].temp_c))
            balance = balance_price_eur_per_mwh(cop, tariff)
            _ = spot[col] < balance
            count += 1
        if count >= n:
            break
    return (time.perf_counter() - began) / count


def main() -> None:
    """Time the vectorised pipeline and print medians and the ratio to a Python loop."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=100_000)
    parser.add_argument("--quarters", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    starts = quarters(T0, T0 + args.quarters * timedelta(minutes=15))
    spot = np.random.default_rng(1).normal(90.0, 40.0, len(starts))
    began = time.perf_counter()
    data = fleet(args.sites)
    print(f"fleet of {args.sites} sites built in {time.perf_counter() - began:.2f} s")
    runs = []
    for _ in range(args.repeats):
        began = time.perf_counter()
        gas = vectorised(data, starts, spot)
        runs.append(time.perf_counter() - began)
    median = statistics.median(runs)
    cells = args.sites * len(starts)
    per_cell = scalar_per_element_s(data, starts, spot)
    print(f"vectorised: {args.sites} sites × {len(starts)} quarters = {cells:,} balance prices")
    print(f"  median {median:.3f} s over {args.repeats} runs (min {min(runs):.3f}, max {max(runs):.3f})")
    print(f"  {cells / median / 1e6:.1f} M balance prices per second; {gas:,} site-quarters prefer gas")
    print(f"python loop: {per_cell * 1e6:.1f} µs per balance price → {per_cell * cells:.0f} s extrapolated")
    print(f"speed-up vectorised / loop: {per_cell * cells / median:.0f}×")


if __name__ == "__main__":
    main()
