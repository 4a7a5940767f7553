"""Per-site gas-versus-electric balance prices."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from hybridpool_shared.messages.base import IntervalMessage, PriceArea, SiteId, utc_key


class HeatSource(StrEnum):
    """Which heat source an interval should use."""

    HEAT_PUMP = "heat_pump"
    GAS = "gas"


class BalancePriceComputed(IntervalMessage):
    """A site's balance price for one interval: the spot price at which HP and gas heat cost the same."""

    site_id: SiteId
    area: PriceArea
    cop: float = Field(gt=0, le=15)
    balance_price_eur_per_mwh: float
    spot_price_eur_per_mwh: float | None = None
    preferred_source: HeatSource | None = None
    saving_eur_per_mwh_heat: float | None = Field(
        default=None, description="Saving of the preferred source per MWh of heat."
    )

    def kafka_key(self) -> bytes:
        """Key by site."""
        return f"{self.site_id}|{utc_key(self.interval_start)}".encode()
