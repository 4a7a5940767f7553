"""Price events: day-ahead spot, imbalance / mFRR energy, and reserve capacity prices."""

from __future__ import annotations

from enum import StrEnum
from typing import Self

from pydantic import Field, model_validator

from hybridpool_shared.messages.base import IntervalMessage, PriceArea, UtcDatetime, utc_key


class PriceDirection(StrEnum):
    """Which way a price applies: both ways, or up / down regulation."""

    NONE = "none"
    UP = "up"
    DOWN = "down"
    SYMMETRIC = "symmetric"


class _PriceBase(IntervalMessage):
    area: PriceArea = Field(description="Bidding zone, e.g. DK1 or DK2.")
    product: str = Field(min_length=1, max_length=40, description="Product name, e.g. spot.")
    direction: PriceDirection = Field(default=PriceDirection.NONE)
    source: str = Field(min_length=1, max_length=80, description="Dataset or replay file.")
    ingested_at: UtcDatetime
    expanded_from_hourly: bool = Field(
        default=False, description="True when an hourly price was repeated over its quarters."
    )
    corrects_previous: bool = Field(
        default=False,
        description="True when this replaces an earlier, different value published for the same key.",
    )

    def kafka_key(self) -> bytes:
        """Key on area, product, direction and the UTC start: the upsert identity."""
        return f"{self.area}|{self.product}|{self.direction}|{utc_key(self.interval_start)}".encode()


class _EnergyPrice(_PriceBase):
    price_eur_per_mwh: float | None = Field(default=None, description="EUR per MWh; may be < 0.")
    price_dkk_per_mwh: float | None = Field(default=None, description="DKK per MWh; may be < 0.")

    @model_validator(mode="after")
    def _one_price(self) -> Self:
        if self.price_eur_per_mwh is None and self.price_dkk_per_mwh is None:
            raise ValueError("a price in EUR or DKK per MWh is required")
        return self


class DayAheadPriceIngested(_EnergyPrice):
    """A day-ahead (SDAC) spot price for one interval and area was ingested."""

    product: str = "spot"


class ImbalancePriceIngested(_EnergyPrice):
    """An imbalance or mFRR energy activation price for one interval was ingested."""


class ReservePriceIngested(_PriceBase):
    """A reserve capacity price (FCR, FCR-D, mFRR, aFRR) for one interval was ingested."""

    price_eur_per_mw_per_h: float | None = Field(default=None, description="EUR per MW per hour.")
    price_dkk_per_mw_per_h: float | None = Field(default=None, description="DKK per MW per hour.")
    volume_mw: float | None = Field(default=None, ge=0, description="Procured volume, MW.")

    @model_validator(mode="after")
    def _one_price(self) -> Self:
        if self.price_eur_per_mw_per_h is None and self.price_dkk_per_mw_per_h is None:
            raise ValueError("a capacity price in EUR or DKK per MW per hour is required")
        return self
