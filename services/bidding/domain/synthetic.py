"""Synthetic fleets and markets for tests, benchmarks and sizing when no data exist (deterministic)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import numpy as np

from hybridpool_shared.domain.pooling import synthetic_reserve_price_eur_per_mw_h
from hybridpool_shared.timeutil import COPENHAGEN
from services.bidding.domain.heat import demand_el_kw, outdoor_forecast_c, storage_el_kwh
from services.bidding.domain.inputs import DEFAULT_PRODUCTS, Fleet, Market, SiteInput, quarter_starts


def synthetic_spot(first: datetime, quarters: int, level: float = 90.0) -> np.ndarray:
    """A day-ahead curve: morning and evening peaks, a cheap night (EUR/MWh)."""
    hours = np.array([q.astimezone(COPENHAGEN).hour + q.minute / 60 for q in quarter_starts(first, quarters)])
    shape = 1.0 + 0.45 * np.exp(-((hours - 8) ** 2) / 4) + 0.6 * np.exp(-((hours - 18.5) ** 2) / 5)
    return np.asarray(level * shape * np.where((hours < 5), 0.7, 1.0), dtype=np.float64)


def synthetic_market(first: datetime, quarters: int, areas: tuple[str, ...] = ("DK1", "DK2")) -> Market:
    """Spot and reserve curves for the given areas."""
    starts = quarter_starts(first, quarters)
    reserve = {
        a: np.array([synthetic_reserve_price_eur_per_mw_h(DEFAULT_PRODUCTS[a].product, q) for q in starts])
        for a in areas
    }
    spot = {a: synthetic_spot(first, quarters, 85.0 + 10 * i) for i, a in enumerate(areas)}
    return Market(first, quarters, spot, reserve)


def synthetic_sites(
    count: int,
    first: datetime,
    quarters: int,
    seed: int = 7,
    areas: tuple[str, ...] = ("DK1", "DK2"),
    outdoor_mean_c: float = 4.0,
) -> list[SiteInput]:
    """Villas of 1–5 kW electric with mixed states, balance prices around the spot level."""
    rng = np.random.default_rng(seed)
    hours = np.array([q.astimezone(COPENHAGEN).hour + q.minute / 60 for q in quarter_starts(first, quarters)])
    sites = []
    for i in range(count):
        power = float(np.round(rng.uniform(1.0, 5.0), 1))
        cop = float(rng.uniform(2.6, 3.4))
        outdoor = outdoor_mean_c + rng.normal(0, 1.5)
        demand = tuple(demand_el_kw(power * cop, cop, outdoor_forecast_c(outdoor, h)) * 0.6 for h in hours)
        balance_level = float(rng.uniform(90.0, 150.0))
        balance = tuple(balance_level + 8 * np.cos((hours - 15) / 24 * 2 * np.pi))
        store = storage_el_kwh(float(rng.uniform(100, 220)), cop)
        on = bool(rng.random() < 0.5)
        sites.append(
            SiteInput(
                site_id=f"villa-{i:06d}",
                area=areas[i % len(areas)],
                hp_power_kw=power,
                demand_kw=demand,
                balance_eur_per_mwh=tuple(float(b) for b in balance),
                storage_kwh=store,
                storage0_kwh=store * float(rng.uniform(0.3, 0.7)),
                min_run_quarters=int(rng.choice([1, 1, 2])),
                lockout_quarters=int(rng.choice([1, 1, 2])),
                max_starts_per_hour=3,
                hp_on=on,
                restriction_quarters=int(rng.choice([0, 0, 1])),
                online=True,
            )
        )
    return sites


def synthetic_fleet(
    count: int, first: datetime, quarters: int, seed: int = 7, outdoor_mean_c: float = 4.0
) -> Fleet:
    """A columnar synthetic fleet built with vectors (fast enough for 100,000 sites)."""
    rng = np.random.default_rng(seed)
    hours = np.array([q.astimezone(COPENHAGEN).hour + q.minute / 60 for q in quarter_starts(first, quarters)])
    power = np.round(rng.uniform(1.0, 5.0, count), 1)
    cop = rng.uniform(2.6, 3.4, count)
    outdoor = outdoor_mean_c + rng.normal(0, 1.5, count)
    temp = outdoor[:, None] + 3.0 * np.cos((hours[None, :] - 15.0) / 24.0 * 2.0 * np.pi)
    design = 2.0 * power * cop
    heat = np.maximum(0.0, design[:, None] * (17.0 - temp) / 29.0)
    demand = heat / cop[:, None] * 0.6
    balance = rng.uniform(90.0, 150.0, count)[:, None] + 8 * np.cos((hours[None, :] - 15) / 24 * 2 * np.pi)
    store = 80.0 * rng.uniform(100, 220, count) * 4.0 / 1000.0 / cop
    areas = ("DK1", "DK2")
    return Fleet(
        site_ids=[f"villa-{i:06d}" for i in range(count)],
        area=[areas[i % 2] for i in range(count)],
        power_kw=power,
        min_run_q=rng.choice([1, 1, 2], count).astype(np.int64),
        lockout_q=rng.choice([1, 1, 2], count).astype(np.int64),
        max_starts_h=np.full(count, 3, dtype=np.int64),
        on0=rng.random(count) < 0.5,
        restrict0_q=rng.choice([0, 0, 1], count).astype(np.int64),
        online=np.ones(count, dtype=np.bool_),
        response=np.ones(count),
        availability=np.full(count, 0.98),
        demand_kw=demand,
        balance=balance,
        storage_kwh=store,
        storage0_kwh=store * rng.uniform(0.3, 0.7, count),
    )


def scaled_site(site: SiteInput, scale: float, area: str = "DK2") -> SiteInput:
    """A larger unit like site (power, demand and store times scale), in one area: the lumpy-fleet case."""
    return replace(
        site,
        area=area,
        hp_power_kw=site.hp_power_kw * scale,
        demand_kw=tuple(d * scale for d in site.demand_kw),
        storage_kwh=site.storage_kwh * scale,
        storage0_kwh=site.storage0_kwh * scale,
    )
