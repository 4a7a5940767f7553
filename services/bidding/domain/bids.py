"""Bids from a per-site plan: symmetric capacity per product period and mFRR energy per quarter.

Bids are derived from the simulated per-site plan, never from the cluster model, so every MW offered
is backed by specific sites that are past their minimum run (up) or lock-out (down) in every quarter,
after the availability margin (hybridpool_shared.domain.pooling).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hybridpool_shared.domain.pooling import floor_to_step, guaranteed_mw_per_quarter
from services.bidding.domain.inputs import BoolArray, Fleet, FloatArray, Market, Options, periods
from services.bidding.domain.sim import SimPlan, down_capable, up_capable


@dataclass(frozen=True)
class CapacityBid:
    """A capacity bid for quarters [first, last) of the plan: symmetric (FCR, FCR-N) or one way (FCR-D)."""

    area: str
    product: str
    first: int
    last: int
    capacity_mw: float
    price_eur_per_mw_h: float
    direction: str = "symmetric"

    def holds(self, direction: str) -> bool:
        """Return True if the bid holds capacity in a direction (up or down)."""
        return self.direction in ("symmetric", direction)


@dataclass(frozen=True)
class EnergyBid:
    """An mFRR energy bid for one quarter: up = HP→gas, down = gas→HP."""

    area: str
    quarter: int
    direction: str
    capacity_mw: float
    price_eur_per_mwh: float


@dataclass(frozen=True)
class Capability:
    """Guaranteed up and down MW per area and quarter (after the margin)."""

    up_mw: dict[str, FloatArray]
    down_mw: dict[str, FloatArray]
    up_sites: BoolArray
    down_sites: BoolArray


def capability(fleet: Fleet, plan: SimPlan, options: Options) -> Capability:
    """Compute the pool's guaranteed up/down MW per area and quarter from a per-site plan."""
    up, down = up_capable(fleet, plan), down_capable(fleet, plan)
    areas = np.array(fleet.area)
    up_mw, down_mw = {}, {}
    for area in sorted(set(fleet.area)):
        mask = areas == area
        args = (fleet.power_kw[mask], fleet.availability[mask], fleet.response[mask])
        up_mw[area] = guaranteed_mw_per_quarter(*args, up[mask], options.z)
        down_mw[area] = guaranteed_mw_per_quarter(*args, down[mask], options.z)
    return Capability(up_mw, down_mw, up, down)


def capacity_bids(cap: Capability, market: Market, options: Options, price: float) -> list[CapacityBid]:
    """One bid per product period where the symmetric guaranteed MW reaches the product's minimum."""
    bids = []
    for area in sorted(cap.up_mw):
        if area not in market.reserve_eur_per_mw_h:
            continue
        both = np.minimum(cap.up_mw[area], cap.down_mw[area])
        for period in periods(market, area):
            mw = floor_to_step(min(float(both[period.first : period.last].min()), options.max_bid_mw))
            if mw >= period.product.min_mw - 1e-9:
                bids.append(
                    CapacityBid(area, period.product.product, period.first, period.last, mw, round(price, 2))
                )
    return bids


def reserved_mw(bids: list[CapacityBid], area: str, quarters: int, direction: str = "up") -> FloatArray:
    """Return the capacity held for frequency reserve per quarter of one area in one direction."""
    held = np.zeros(quarters)
    for bid in bids:
        if bid.area == area and bid.holds(direction):
            held[bid.first : bid.last] += bid.capacity_mw
    return held


FCR_D_AREA = "DK2"
FCR_D_PRODUCTS = {"up": "fcr_d_up", "down": "fcr_d_down"}


def fcr_d_bids(
    fleet: Fleet,
    plan: SimPlan,
    cap: Capability,
    market: Market,
    options: Options,
    held: list[CapacityBid],
    price: float,
) -> list[CapacityBid]:
    """FCR-D up and down per DK2 hour from sites measured to reach 100 % within 30 s, on top of FCR-N.

    FCR-D is bought each way separately. Only fast sites can carry it, and what the pool already holds
    for FCR-N in that direction comes first: B ≤ the fast sites' guaranteed MW and ≤ the pool's
    guaranteed MW less the FCR-N held, in every quarter of the hour. Priced like FCR-N, at the cost of
    holding the plan's flexibility, and only where the market has an FCR-D price to forecast from.
    """
    if fleet.response_fcr_d is None or FCR_D_AREA not in cap.up_mw:
        return []
    fast = (np.array(fleet.area) == FCR_D_AREA) & fleet.online & (fleet.response_fcr_d > 0)
    if not fast.any():
        return []
    capable = {"up": up_capable(fleet, plan)[fast], "down": down_capable(fleet, plan)[fast]}
    pool = {"up": cap.up_mw[FCR_D_AREA], "down": cap.down_mw[FCR_D_AREA]}
    args = (fleet.power_kw[fast], fleet.availability[fast], fleet.response_fcr_d[fast])
    bids = []
    for direction, product in FCR_D_PRODUCTS.items():
        prices = market.fcr_d_eur_per_mw_h.get(product)
        if prices is None:
            continue
        fast_mw = guaranteed_mw_per_quarter(*args, capable[direction], options.z)
        room = pool[direction] - reserved_mw(held, FCR_D_AREA, market.quarters, direction)
        for period in periods(market, FCR_D_AREA):
            window = slice(period.first, period.last)
            mw = floor_to_step(max(0.0, min(float(fast_mw[window].min()), float(room[window].min()))))
            if mw >= market.fcr_d_min_mw - 1e-9:
                bids.append(
                    CapacityBid(
                        FCR_D_AREA, product, period.first, period.last, mw, round(price, 2), direction
                    )
                )
    return bids


def energy_bids(
    fleet: Fleet, cap: Capability, market: Market, capacity: list[CapacityBid]
) -> list[EnergyBid]:
    """mFRR energy bids per quarter from the capability left after FCR, priced at the units' balance price.

    Up (HP off, boiler on) costs the boiler heat, worth the balance price per MWh of electricity not used:
    the bid asks at least the highest balance price of the units offered. Down (HP on) saves that heat:
    the bid pays at most the lowest balance price of the units offered.
    """
    bids = []
    areas = np.array(fleet.area)
    for area in sorted(cap.up_mw):
        mask = areas == area
        held_up = reserved_mw(capacity, area, market.quarters, "up")
        held_down = reserved_mw(capacity, area, market.quarters, "down")
        for t in range(market.quarters):
            up_mw = floor_to_step(max(0.0, float(cap.up_mw[area][t] - held_up[t])))
            if up_mw >= market.mfrr_min_mw - 1e-9:
                price = float(fleet.balance[mask & cap.up_sites[:, t], t].max())
                bids.append(EnergyBid(area, t, "up", up_mw, round(price, 2)))
            down_mw = floor_to_step(max(0.0, float(cap.down_mw[area][t] - held_down[t])))
            if down_mw >= market.mfrr_min_mw - 1e-9:
                price = float(fleet.balance[mask & cap.down_sites[:, t], t].min())
                bids.append(EnergyBid(area, t, "down", down_mw, round(price, 2)))
    return bids
