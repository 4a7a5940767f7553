"""Pool plans, market bids, clearing results, activations and grid frequency."""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Self

from pydantic import Field, model_validator

from hybridpool_shared.messages.base import IntervalMessage, Message, PriceArea, SiteId, UtcDatetime

MAX_QUARTERS = 100


class ReserveProduct(StrEnum):
    """Market products the pool can bid."""

    FCR_N = "fcr_n"
    FCR_D_UP = "fcr_d_up"
    FCR_D_DOWN = "fcr_d_down"
    FCR_DK1 = "fcr_dk1"
    MFRR_CAPACITY = "mfrr_capacity"
    MFRR_ENERGY = "mfrr_energy"


class Direction(StrEnum):
    """Regulation direction: up lowers consumption (HPs off), down raises it (HPs on)."""

    UP = "up"
    DOWN = "down"
    SYMMETRIC = "symmetric"


class SitePlanComputed(Message):
    """A site's HP-or-gas plan per quarter-hour was computed."""

    plan_id: str = Field(min_length=1, max_length=80)
    site_id: SiteId
    first_quarter_start: UtcDatetime
    hp_on: tuple[bool, ...] = Field(min_length=1, max_length=MAX_QUARTERS)
    expected_hp_power_kw: tuple[float, ...] = Field(min_length=1, max_length=MAX_QUARTERS)
    fallback: bool = Field(default=False, description="True: solver failed, safe plan used.")

    def kafka_key(self) -> bytes:
        """Key by site."""
        return self.site_id.encode()

    @model_validator(mode="after")
    def _lengths_match(self) -> Self:
        if len(self.hp_on) != len(self.expected_hp_power_kw):
            raise ValueError("hp_on and expected_hp_power_kw must have one entry per quarter")
        return self

    def quarter_start(self, index: int) -> UtcDatetime:
        """Return the UTC start of quarter number index."""
        return self.first_quarter_start + timedelta(minutes=15 * index)


class SitePoolMembershipChanged(Message):
    """An operator took a site out of the pool or put it back (dispatch and bidding honour it)."""

    site_id: SiteId
    in_pool: bool = Field(description="False: dispatch sends it no command and bidding plans without it.")
    changed_at: UtcDatetime
    changed_by: str = Field(min_length=1, max_length=64, description="The operator who decided it.")
    reason: str = Field(default="", max_length=500)

    def kafka_key(self) -> bytes:
        """Key by site: the compacted topic keeps each site's current membership."""
        return self.site_id.encode()


class BidSubmitted(IntervalMessage):
    """A bid was submitted to the market for one period."""

    bid_id: str = Field(min_length=1, max_length=80)
    plan_id: str = Field(default="", max_length=80)
    area: PriceArea
    product: ReserveProduct
    direction: Direction
    capacity_mw: float = Field(gt=0, le=1000, description="In 0.1 MW steps.")
    price_eur_per_mw_per_h: float | None = Field(default=None, description="Capacity bids.")
    price_eur_per_mwh: float | None = Field(default=None, description="Energy bids.")
    submitted_at: UtcDatetime

    def kafka_key(self) -> bytes:
        """Key by bid."""
        return self.bid_id.encode()

    @model_validator(mode="after")
    def _steps_and_price(self) -> Self:
        if abs(self.capacity_mw * 10 - round(self.capacity_mw * 10)) > 1e-6:
            raise ValueError("capacity_mw must be a multiple of 0.1 MW")
        if self.price_eur_per_mw_per_h is None and self.price_eur_per_mwh is None:
            raise ValueError("a bid needs a capacity or an energy price")
        return self


class BidCleared(Message):
    """The market cleared a bid: accepted or not, at which price."""

    bid_id: str = Field(min_length=1, max_length=80)
    accepted: bool
    accepted_mw: float = Field(ge=0)
    clearing_price_eur_per_mw_per_h: float | None = None
    clearing_price_eur_per_mwh: float | None = None
    cleared_at: UtcDatetime
    refused_because: str = Field(
        default="", max_length=500, description="Set when the market refused the bid outright: which rules."
    )

    def kafka_key(self) -> bytes:
        """Key by bid."""
        return self.bid_id.encode()


class PoolActivated(Message):
    """The TSO activated the pool: a step of power in one direction for a period."""

    activation_id: str = Field(min_length=1, max_length=80)
    bid_id: str = Field(default="", max_length=80)
    product: ReserveProduct
    direction: Direction
    power_mw: float = Field(gt=0, le=1000)
    start: UtcDatetime
    end: UtcDatetime
    requested_at: UtcDatetime
    area: PriceArea | None = Field(
        default=None, description="The bidding zone whose units must deliver (None: the product's own zone)."
    )

    def kafka_key(self) -> bytes:
        """Key by activation."""
        return self.activation_id.encode()

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end <= self.start:
            raise ValueError("activation end must be after its start")
        if self.direction is Direction.SYMMETRIC:
            raise ValueError("an activation is up or down, not symmetric")
        return self


class FrequencyMeasured(Message):
    """The grid frequency was measured (1 s resolution)."""

    area: PriceArea
    measured_at: UtcDatetime
    frequency_hz: float = Field(ge=45, le=55)

    def kafka_key(self) -> bytes:
        """Key by area: frequency samples stay in order."""
        return self.area.encode()


__all__ = [
    "BidCleared",
    "BidSubmitted",
    "Direction",
    "FrequencyMeasured",
    "IntervalMessage",
    "PoolActivated",
    "ReserveProduct",
    "SitePlanComputed",
]
