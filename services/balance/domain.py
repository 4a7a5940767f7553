"""Balance prices for sites × intervals, vectorised: tariffs with effective dates, COP forecast, decision.

Pure: no I/O. Inputs are plain arrays and models; the service loads them from Redis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from hybridpool_shared.domain.balance import (
    FloatArray,
    balance_prices,
    gas_heat_price,
    heat_pump_preferred,
    saving_per_mwh_heat,
)
from hybridpool_shared.domain.cop import CopModel, fleet_cop
from hybridpool_shared.messages import BalancePriceComputed, HeatSource, SiteMasterDataChanged
from hybridpool_shared.messages.base import UtcDatetime
from hybridpool_shared.timeutil import COPENHAGEN, QUARTER

PORTFOLIO = "portfolio"


class TariffVersion(BaseModel):
    """Gas price, calorific value and electricity adders for the portfolio or one site, from a date on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scope: str = Field(
        default=PORTFOLIO, min_length=1, max_length=64, description="'portfolio' or a site id."
    )
    effective_from: UtcDatetime
    gas_price_eur_per_m3: float = Field(gt=0, le=20, description="Gas price incl. taxes and network.")
    gas_kwh_per_m3: float = Field(default=11.0, gt=5, le=15, description="Gross calorific value.")
    electricity_adders_eur_per_mwh: float = Field(
        ge=-100, le=2000, description="Non-spot electricity costs: taxes, supplier fee, flat tariff."
    )
    hourly_tariff_eur_per_mwh: tuple[Annotated[float, Field(ge=-100, le=2000)], ...] | None = Field(
        default=None, description="24 grid-tariff values by Copenhagen local hour, added to the adders."
    )
    boiler_efficiency: float | None = Field(default=None, gt=0, le=1.1, description="Override the site's.")

    @model_validator(mode="after")
    def _hours(self) -> TariffVersion:
        if self.hourly_tariff_eur_per_mwh is not None and len(self.hourly_tariff_eur_per_mwh) != 24:
            raise ValueError("hourly_tariff_eur_per_mwh needs 24 values (local hours 0–23)")
        return self


@dataclass(frozen=True)
class TariffDefaults:
    """The tariff when no version applies (service settings)."""

    gas_price_eur_per_m3: float
    gas_kwh_per_m3: float
    electricity_adders_eur_per_mwh: float


@dataclass(frozen=True)
class Tariffs:
    """Gas heat price and adders per site × interval."""

    gas_heat_eur_per_mwh: FloatArray
    adders_eur_per_mwh: FloatArray


def resolve_tariffs(
    site_ids: Sequence[str],
    boiler_efficiency: FloatArray,
    starts: Sequence[datetime],
    versions: Sequence[TariffVersion],
    defaults: TariffDefaults,
) -> Tariffs:
    """Apply portfolio versions, then site versions, each from its effective date (later wins)."""
    shape = (len(site_ids), len(starts))
    price = np.full(shape, defaults.gas_price_eur_per_m3)
    kwh = np.full(shape, defaults.gas_kwh_per_m3)
    eff = np.broadcast_to(boiler_efficiency[:, None], shape).copy()
    adders = np.full(shape, defaults.electricity_adders_eur_per_mwh)
    epoch = np.array([s.timestamp() for s in starts])
    local_hour = np.array([s.astimezone(COPENHAGEN).hour for s in starts], dtype=np.int64)
    row_of = {site: row for row, site in enumerate(site_ids)}
    ordered = sorted(versions, key=lambda v: (v.scope != PORTFOLIO, v.effective_from))
    for version in ordered:
        rows: slice | int | None = slice(None) if version.scope == PORTFOLIO else row_of.get(version.scope)
        if rows is None:
            continue
        cols = epoch >= version.effective_from.timestamp()
        if not cols.any():
            continue
        price[rows, cols] = version.gas_price_eur_per_m3
        kwh[rows, cols] = version.gas_kwh_per_m3
        extra = np.zeros(len(starts))
        if version.hourly_tariff_eur_per_mwh is not None:
            extra = np.asarray(version.hourly_tariff_eur_per_mwh)[local_hour]
        adders[rows, cols] = (version.electricity_adders_eur_per_mwh + extra)[cols]
        if version.boiler_efficiency is not None:
            eff[rows, cols] = version.boiler_efficiency
    return Tariffs(gas_heat_price(price, kwh, eff), adders)


@dataclass(frozen=True)
class OutdoorReading:
    """The latest measured outdoor temperature of a site."""

    temp_c: float
    measured_at: datetime


@dataclass(frozen=True)
class CopPolicy:
    """How to forecast COP when a site's own data is thin (service settings)."""

    default_cop: float
    type_model: CopModel
    seasonal_outdoor_c: tuple[float, ...] | None
    outdoor_max_age: timedelta


def outdoor_forecast(
    readings: Sequence[OutdoorReading | None], starts: Sequence[datetime], now: datetime, policy: CopPolicy
) -> FloatArray:
    """Outdoor °C per site × interval: persistence of a recent reading, else the month's seasonal value.

    NaN where neither is known: the COP then falls back to the default COP.
    """
    shape = (len(readings), len(starts))
    result = np.full(shape, np.nan)
    if policy.seasonal_outdoor_c is not None:
        months = np.array([s.astimezone(COPENHAGEN).month - 1 for s in starts], dtype=np.int64)
        result[:] = np.asarray(policy.seasonal_outdoor_c)[months]
    for row, reading in enumerate(readings):
        if reading is not None and now - reading.measured_at <= policy.outdoor_max_age:
            result[row, :] = reading.temp_c
    return result


def cop_matrix(models: Sequence[CopModel | None], outdoor_c: FloatArray, policy: CopPolicy) -> FloatArray:
    """COP per site × interval: each site's model (fitted or the type default) at the forecast."""
    chosen = [m or policy.type_model for m in models]
    eff = np.array([m.efficiency for m in chosen])
    base = np.array([m.curve.base_c for m in chosen])
    slope = np.array([m.curve.slope for m in chosen])
    known = np.isfinite(outdoor_c)
    cop = fleet_cop(
        eff, base, slope, np.where(known, outdoor_c, 10.0), spread_k=policy.type_model.hot_spread_k
    )
    result: FloatArray = np.where(known, cop, policy.default_cop)
    return result


@dataclass(frozen=True)
class BalanceMatrix:
    """Balance prices and decisions for sites (rows) × intervals (columns); spot per interval."""

    cop: FloatArray
    balance_eur_per_mwh: FloatArray
    spot_eur_per_mwh: FloatArray
    heat_pump: npt.NDArray[np.bool_]
    saving_eur_per_mwh_heat: FloatArray


def balance_matrix(cop: FloatArray, tariffs: Tariffs, spot_eur_per_mwh: FloatArray) -> BalanceMatrix:
    """Compute balance price, HP-or-gas and saving; spot is per interval (NaN: not known yet)."""
    balance = balance_prices(cop, tariffs.gas_heat_eur_per_mwh, tariffs.adders_eur_per_mwh)
    spot = np.broadcast_to(spot_eur_per_mwh[None, :], balance.shape)
    return BalanceMatrix(
        cop=cop,
        balance_eur_per_mwh=balance,
        spot_eur_per_mwh=spot_eur_per_mwh,
        heat_pump=heat_pump_preferred(spot, balance),
        saving_eur_per_mwh_heat=saving_per_mwh_heat(spot, balance, cop),
    )


def to_messages(
    matrix: BalanceMatrix, site_ids: Sequence[str], areas: Sequence[str], starts: Sequence[datetime]
) -> list[BalancePriceComputed]:
    """Return one BalancePriceComputed per site and quarter-hour."""
    out = []
    balance = np.round(matrix.balance_eur_per_mwh, 4).tolist()
    cops = np.round(matrix.cop, 4).tolist()
    savings = np.round(matrix.saving_eur_per_mwh_heat, 4).tolist()
    hp = matrix.heat_pump.tolist()
    spots = [None if np.isnan(s) else float(s) for s in matrix.spot_eur_per_mwh]
    for row, site_id in enumerate(site_ids):
        for col, start in enumerate(starts):
            spot = spots[col]
            out.append(
                BalancePriceComputed(
                    site_id=site_id,
                    area=areas[row],
                    interval_start=start,
                    interval_end=start + QUARTER,
                    interval_minutes=15,
                    cop=cops[row][col],
                    balance_price_eur_per_mwh=balance[row][col],
                    spot_price_eur_per_mwh=spot,
                    preferred_source=None if spot is None else _source(hp[row][col]),
                    saving_eur_per_mwh_heat=None if spot is None else savings[row][col],
                )
            )
    return out


def _source(heat_pump: bool) -> HeatSource:
    return HeatSource.HEAT_PUMP if heat_pump else HeatSource.GAS


def quarters(start: datetime, end: datetime) -> list[datetime]:
    """Return the UTC quarter-hour starts in [start, end)."""
    count = max(0, int((end - start) / QUARTER))
    return [start + i * QUARTER for i in range(count)]


def active_sites(
    sites: Sequence[SiteMasterDataChanged], area: str | None = None
) -> list[SiteMasterDataChanged]:
    """Return the registered (not deleted) sites, optionally of one price area, in id order."""
    chosen = [s for s in sites if not s.deleted and (area is None or s.location.price_area == area)]
    return sorted(chosen, key=lambda s: s.site_id)


def summary(matrix: BalanceMatrix, starts: Sequence[datetime]) -> dict[str, object]:
    """Portfolio view: sites preferring gas per quarter and the fleet's balance-price distribution."""
    balance = matrix.balance_eur_per_mwh
    known = ~np.isnan(matrix.spot_eur_per_mwh)
    gas = (~matrix.heat_pump & known[None, :]).sum(axis=0)
    hp = (matrix.heat_pump & known[None, :]).sum(axis=0)
    pct = (5, 25, 50, 75, 95)
    per_quarter = [
        {
            "interval_start": start.isoformat(),
            "sites": int(balance.shape[0]),
            "prefer_gas": int(gas[col]),
            "prefer_heat_pump": int(hp[col]),
            "spot_eur_per_mwh": float(matrix.spot_eur_per_mwh[col]) if known[col] else None,
            "median_balance_eur_per_mwh": round(float(np.median(balance[:, col])), 2)
            if balance.size
            else None,
        }
        for col, start in enumerate(starts)
    ]
    dist = np.percentile(balance, pct).round(2).tolist() if balance.size else [None] * len(pct)
    return {
        "sites": int(balance.shape[0]),
        "quarters": len(starts),
        "balance_price_percentiles_eur_per_mwh": dict(zip((f"p{p}" for p in pct), dist, strict=True)),
        "balance_price_mean_eur_per_mwh": round(float(balance.mean()), 2) if balance.size else None,
        "per_quarter": per_quarter,
    }
