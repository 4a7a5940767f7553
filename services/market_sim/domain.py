"""The TSO on this machine: clearing, mFRR prices and activations, frequency, settlement (pure, seeded).

Synthetic series (used when nothing is replayed), all deterministic in (seed, time):
- capacity clearing price: hybridpool_shared.domain.pooling.synthetic_reserve_price_eur_per_mw_h;
- mFRR marginal prices per quarter: up 110 ± 40 EUR/MWh, down 60 ± 25 EUR/MWh (uniform noise);
- mFRR volumes like MfrrEnergyActivationMarket: activated up/down MW out of ~400 MW offered, drawn as
  0 with probability 0.8 (quiet), else lognormal around 60 MW; an in-merit pool bid is activated up to
  that volume (merit order: cheaper bids go first);
- frequency: 50 Hz + a slow wander (±20 mHz) + white noise (σ 5 mHz) + rare events (one 30-s dip per
  hour with probability 5 %); scenario big_frequency_drop adds a dip to 49.55 Hz at minute 10 of
  every hour; long_up_activation activates every accepted up bid between 17:00 and 19:00 Copenhagen.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import numpy as np

from hybridpool_shared.domain.market_rules import bid_violations
from hybridpool_shared.domain.pooling import floor_to_step
from hybridpool_shared.messages import BidCleared, BidSubmitted, Direction, PoolActivated, ReserveProduct
from hybridpool_shared.timeutil import COPENHAGEN, require_utc

NOMINAL_HZ = 50.0
OFFERED_MW = 400.0


class Scenario(StrEnum):
    """Selectable market days."""

    QUIET = "quiet"
    BIG_FREQUENCY_DROP = "big_frequency_drop"
    LONG_UP_ACTIVATION = "long_up_activation"


def rng_for(seed: int, *parts: object) -> np.random.Generator:
    """A generator that depends only on the seed and the given parts (e.g. a timestamp)."""
    digest = hashlib.sha256(("|".join(map(str, (seed, *parts)))).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


@dataclass(frozen=True)
class MfrrQuarter:
    """One quarter of the mFRR energy market: marginal prices and activated vs offered volumes."""

    up_price_eur_per_mwh: float
    down_price_eur_per_mwh: float
    up_mw: float
    down_mw: float
    offered_up_mw: float = OFFERED_MW
    offered_down_mw: float = OFFERED_MW


def synthetic_mfrr(seed: int, start: datetime, scenario: Scenario) -> MfrrQuarter:
    """Synthetic mFRR quarter (see module doc)."""
    rng = rng_for(seed, "mfrr", int(require_utc(start).timestamp()))
    up_price = 110.0 + rng.uniform(-40, 40)
    down_price = 60.0 + rng.uniform(-25, 25)
    up = 0.0 if rng.random() < 0.8 else float(rng.lognormal(math.log(60), 0.5))
    down = 0.0 if rng.random() < 0.8 else float(rng.lognormal(math.log(60), 0.5))
    if scenario is Scenario.LONG_UP_ACTIVATION and 17 <= start.astimezone(COPENHAGEN).hour < 19:
        up, down, up_price = OFFERED_MW * 0.75, 0.0, max(up_price, 250.0)
    return MfrrQuarter(round(up_price, 2), round(down_price, 2), min(up, OFFERED_MW), min(down, OFFERED_MW))


def replayed_mfrr(record: dict[str, object]) -> MfrrQuarter:
    """An MfrrEnergyActivationMarket record (EDS field names) as a quarter; nulls count as 0 MW."""

    def num(name: str, default: float = 0.0) -> float:
        value = record.get(name)
        return float(value) if isinstance(value, int | float) else default

    return MfrrQuarter(
        up_price_eur_per_mwh=num("mFRRSAUpEUR", 110.0),
        down_price_eur_per_mwh=num("mFRRSADownEUR", 60.0),
        up_mw=num("TotalmFRRUpMW"),
        down_mw=num("TotalmFRRDownMW"),
        offered_up_mw=max(1.0, num("mFRROfferedUpMW", OFFERED_MW)),
        offered_down_mw=max(1.0, num("mFRROfferedDownMW", OFFERED_MW)),
    )


def is_capacity(bid: BidSubmitted) -> bool:
    """True for a capacity bid (priced per MW per hour)."""
    return bid.price_eur_per_mw_per_h is not None and bid.product is not ReserveProduct.MFRR_ENERGY


def refuse(bid: BidSubmitted, now: datetime) -> BidCleared | None:
    """Refuse a bid that breaks the product's market rules, as the TSO's platform would (None: valid)."""
    broken = bid_violations(bid)
    if not broken:
        return None
    return BidCleared(
        bid_id=bid.bid_id,
        accepted=False,
        accepted_mw=0.0,
        cleared_at=now,
        refused_because="; ".join(broken)[:500],
    )


def clear_capacity(bid: BidSubmitted, clearing_eur_per_mw_h: float, now: datetime) -> BidCleared:
    """Pay-as-cleared: accepted in full if the bid price ≤ the clearing price (bids are indivisible)."""
    price = bid.price_eur_per_mw_per_h if bid.price_eur_per_mw_per_h is not None else math.inf
    accepted = price <= clearing_eur_per_mw_h
    return BidCleared(
        bid_id=bid.bid_id,
        accepted=accepted,
        accepted_mw=bid.capacity_mw if accepted else 0.0,
        clearing_price_eur_per_mw_per_h=clearing_eur_per_mw_h,
        cleared_at=now,
    )


def clear_energy(bid: BidSubmitted, quarter: MfrrQuarter, now: datetime) -> BidCleared:
    """An up bid is in merit if it asks ≤ the up price; a down bid if it pays ≥ the down price."""
    price = bid.price_eur_per_mwh if bid.price_eur_per_mwh is not None else math.nan
    if bid.direction is Direction.UP:
        accepted, clearing = price <= quarter.up_price_eur_per_mwh, quarter.up_price_eur_per_mwh
    else:
        accepted, clearing = price >= quarter.down_price_eur_per_mwh, quarter.down_price_eur_per_mwh
    return BidCleared(
        bid_id=bid.bid_id,
        accepted=bool(accepted),
        accepted_mw=bid.capacity_mw if accepted else 0.0,
        clearing_price_eur_per_mwh=clearing,
        cleared_at=now,
    )


def activation_for(bid: BidSubmitted, quarter: MfrrQuarter, now: datetime) -> PoolActivated | None:
    """Activate an accepted (in-merit) energy bid when the market activated volume in its direction.

    Bids are activated in price order up to the marginal price, so an in-merit bid is activated in full
    whenever the TSO activated at least its volume that quarter; a smaller market volume scales it down.
    """
    volume = quarter.up_mw if bid.direction is Direction.UP else quarter.down_mw
    power = floor_to_step(min(bid.capacity_mw, volume))
    if power <= 0:
        return None
    return PoolActivated(
        activation_id=f"act:{bid.bid_id}"[:80],
        bid_id=bid.bid_id,
        product=ReserveProduct.MFRR_ENERGY,
        direction=bid.direction,
        power_mw=power,
        start=bid.interval_start,
        end=bid.interval_end,
        requested_at=now,
        area=bid.area,
    )


def frequency_hz(seed: int, area: str, at: datetime, scenario: Scenario) -> float:
    """The grid frequency at a second (see module doc for the synthetic trace)."""
    at = require_utc(at).replace(microsecond=0)
    ts = int(at.timestamp())
    slow = sum(
        0.007 * math.sin(2 * math.pi * ts / period + rng_for(seed, area, "phase", period).uniform(0, 6.3))
        for period in (97.0, 311.0, 1013.0)
    )
    noise = float(rng_for(seed, area, "noise", ts).normal(0, 0.005))
    hour_start = at.replace(minute=0, second=0)
    event = 0.0
    hour_rng = rng_for(seed, area, "event", int(hour_start.timestamp()))
    if hour_rng.random() < 0.05:
        event += _dip(at, hour_start + timedelta(seconds=int(hour_rng.integers(0, 3600))), 0.25)
    if scenario is Scenario.BIG_FREQUENCY_DROP:
        event += _dip(at, hour_start + timedelta(minutes=10), 0.45)
    return round(min(55.0, max(45.0, NOMINAL_HZ + slow + noise - event)), 4)


def replayed_frequency_hz(trace: list[float], at: datetime) -> float:
    """The replayed sample for a second: position = seconds since UTC midnight, looping over the trace."""
    at = require_utc(at)
    second = at.hour * 3600 + at.minute * 60 + at.second
    return trace[second % len(trace)]


def _dip(at: datetime, begins: datetime, depth_hz: float) -> float:
    """A sudden drop held 30 s, then an exponential recovery (time constant 60 s)."""
    elapsed = (at - begins).total_seconds()
    if elapsed < 0:
        return 0.0
    if elapsed <= 30:
        return depth_hz
    return depth_hz * math.exp(-(elapsed - 30) / 60.0)


def capacity_revenue_eur(bid: BidSubmitted, result: BidCleared) -> float:
    """Pay-as-cleared capacity payment: clearing price × MW × hours."""
    if not result.accepted or result.clearing_price_eur_per_mw_per_h is None:
        return 0.0
    hours = bid.interval_minutes / 60.0
    return round(result.clearing_price_eur_per_mw_per_h * result.accepted_mw * hours, 2)


def activation_revenue_eur(activation: PoolActivated, price_eur_per_mwh: float) -> float:
    """Energy settlement: paid for up (consumption avoided), paying for down (consumption added)."""
    hours = (activation.end - activation.start).total_seconds() / 3600.0
    sign = 1.0 if activation.direction is Direction.UP else -1.0
    return round(sign * activation.power_mw * hours * price_eur_per_mwh, 2)
