"""Build the planner's inputs from master data, live states and the price book (pure, no I/O)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime

import numpy as np

from hybridpool_shared.domain.balance import GasTariff, balance_price_eur_per_mwh
from hybridpool_shared.domain.pooling import synthetic_reserve_price_eur_per_mw_h
from hybridpool_shared.messages import ControlOption, SiteLocation, SiteMasterDataChanged
from hybridpool_shared.sitestate import GatewayStatus, SiteLiveState
from hybridpool_shared.timeutil import COPENHAGEN, require_utc
from services.bidding.adapters import Book
from services.bidding.domain.heat import demand_el_kw, outdoor_forecast_c, storage_el_kwh, storage_fill_kwh
from services.bidding.domain.inputs import Fleet, FloatArray, Market, ProductRule, SiteInput, quarter_starts
from services.bidding.domain.synthetic import synthetic_spot
from services.bidding.settings import BiddingSettings

DEFAULT_AREA = "DK1"


@dataclass(frozen=True)
class Assembled:
    """Planner inputs and where they came from."""

    fleet: Fleet
    market: Market
    sources: dict[str, str]


def default_master(state: SiteLiveState, changed_at: datetime) -> SiteMasterDataChanged:
    """Master data for a site known only from its live state: its running power (else 3 kW), 15-min rules."""
    power = state.electric_power_kw if state.hp_running and 0.5 <= state.electric_power_kw <= 20 else 3.0
    return SiteMasterDataChanged(
        site_id=state.site_id,
        changed_at=changed_at,
        location=SiteLocation(latitude_deg=56.0, longitude_deg=10.0, price_area=DEFAULT_AREA),
        hp_heat_power_kw=round(3.0 * power, 2),
        hp_electric_power_kw=round(power, 2),
        control_options=(ControlOption.SG_READY,),
    )


def _quarters(minutes: int) -> int:
    return math.ceil(minutes / 15)


def _restriction(state: SiteLiveState | None, first: datetime) -> tuple[bool, int]:
    """Return (running, quarters of min run / lock-out left at the plan start)."""
    if state is None:
        return False, 0
    end = state.min_run_ends_at if state.hp_running else state.lockout_ends_at
    if end is None or end <= first:
        return state.hp_running, 0
    return state.hp_running, math.ceil((end - first).total_seconds() / 900)


def site_input(
    master: SiteMasterDataChanged,
    state: SiteLiveState | None,
    first: datetime,
    quarters: int,
    book: Book,
    settings: BiddingSettings,
    response: float,
) -> SiteInput:
    """Build one site's planner input."""
    starts = quarter_starts(first, quarters)
    area = master.location.price_area
    tariff = GasTariff(
        settings.gas_price_eur_per_m3,
        settings.gas_kwh_per_m3,
        master.boiler_efficiency,
        settings.electricity_adders_eur_per_mwh,
    )
    known = book.balance.get(master.site_id, {})
    outdoor = state.outdoor_temp_c if state is not None else settings.default_outdoor_c
    demand, balance, cops = [], [], []
    for q in starts:
        bal_cop = known.get(int(q.timestamp()))
        cop = bal_cop[1] if bal_cop else settings.default_cop
        local = q.astimezone(COPENHAGEN)
        temp = outdoor_forecast_c(outdoor, local.hour + local.minute / 60)
        demand.append(demand_el_kw(master.hp_heat_power_kw, cop, temp))
        balance.append(bal_cop[0] if bal_cop else balance_price_eur_per_mwh(cop, tariff))
        cops.append(cop)
    capacity = storage_el_kwh(master.heated_area_m2, float(np.mean(cops)))
    running, left = _restriction(state, first)
    online = state is None or state.gateway_status is not GatewayStatus.OFFLINE
    availability = settings.default_availability if state is not None else settings.unknown_state_availability
    if state is not None and state.gateway_status is GatewayStatus.STALE:
        availability *= 0.8
    return SiteInput(
        site_id=master.site_id,
        area=area,
        hp_power_kw=master.hp_electric_power_kw,
        demand_kw=tuple(demand),
        balance_eur_per_mwh=tuple(balance),
        storage_kwh=capacity,
        storage0_kwh=storage_fill_kwh(state.indoor_temp_c if state else None, capacity),
        min_run_quarters=_quarters(master.min_run_minutes),
        lockout_quarters=_quarters(master.lockout_minutes),
        max_starts_per_hour=master.max_starts_per_hour,
        hp_on=running,
        restriction_quarters=left,
        online=online,
        response=response,
        availability=availability,
    )


def assemble(
    masters: dict[str, SiteMasterDataChanged],
    states: dict[str, SiteLiveState],
    responses: dict[str, float],
    book: Book,
    settings: BiddingSettings,
    first: datetime,
    quarters: int,
    fcr_d_responses: dict[str, float] | None = None,
) -> Assembled | None:
    """Build fleet and market; sites with only a live state get default master data. None: no sites.

    responses judge each site against its area's FCR product; fcr_d_responses against FCR-D's 30 s.
    """
    first = require_utc(first)
    sources = {"sites": "registry" if masters else "live_state_defaults"}
    everyone = dict(masters)
    for site_id, state in states.items():
        everyone.setdefault(site_id, default_master(state, first))
    if not everyone:
        return None
    fast = fcr_d_responses or {}
    sites = [
        replace(
            site_input(m, states.get(sid), first, quarters, book, settings, responses.get(sid, 1.0)),
            response_fcr_d=fast.get(sid, 0.0),
        )
        for sid, m in sorted(everyone.items())
    ]
    market = _market(sorted({s.area for s in sites}), book, settings, first, quarters, sources)
    return Assembled(Fleet.from_sites(sites), market, sources)


def _market(
    areas: list[str],
    book: Book,
    settings: BiddingSettings,
    first: datetime,
    quarters: int,
    sources: dict[str, str],
) -> Market:
    starts = quarter_starts(first, quarters)
    products = {
        "DK1": ProductRule("fcr_dk1", 4, settings.min_bid_fcr_dk1_mw),
        "DK2": ProductRule("fcr_n", 1, settings.min_bid_fcr_n_mw),
    }
    spot, reserve = {}, {}
    fallback_spot = synthetic_spot(first, quarters, settings.default_spot_eur_per_mwh)
    for area in areas:
        known = [book.spot_at(area, q) for q in starts]
        spot[area] = np.array([fallback_spot[i] if v is None else v for i, v in enumerate(known)])
        sources[f"spot:{area}"] = "day_ahead" if all(v is not None for v in known) else "partly_synthetic"
        rule = products.get(area)
        if rule is None:
            continue
        forecast = [book.reserve_forecast(area, rule.product, q) for q in starts]
        reserve[area] = np.array(
            [
                synthetic_reserve_price_eur_per_mw_h(rule.product, q) if v is None else v
                for q, v in zip(starts, forecast, strict=True)
            ]
        )
        sources[f"reserve:{area}"] = (
            "auctions" if all(v is not None for v in forecast) else "partly_synthetic"
        )
    fcr_d = _fcr_d_prices(book, starts) if "DK2" in areas else {}
    return Market(
        first, quarters, spot, reserve, products, settings.min_bid_mfrr_mw, fcr_d, settings.min_bid_fcr_d_mw
    )


def _fcr_d_prices(book: Book, starts: list[datetime]) -> dict[str, FloatArray]:
    """DK2's FCR-D up and down price forecasts, only where every quarter has one (no synthetic FCR-D)."""
    prices = {}
    for product in ("fcr_d_up", "fcr_d_down"):
        forecast = [book.reserve_forecast("DK2", product, q) for q in starts]
        if all(v is not None for v in forecast):
            prices[product] = np.array(forecast, dtype=np.float64)
    return prices
