"""Balance prices for one price interval across the sites of its area: pure, no I/O."""

from __future__ import annotations

from collections.abc import Iterable

from hybridpool_shared.domain.balance import GasTariff, balance_price_eur_per_mwh
from hybridpool_shared.messages import (
    BalancePriceComputed,
    DayAheadPriceIngested,
    HeatSource,
    SiteMasterDataChanged,
)


def tariff_for(
    site: SiteMasterDataChanged, gas_eur_per_m3: float, kwh_per_m3: float, adders: float
) -> GasTariff:
    """Return the gas tariff of a site with its own boiler efficiency."""
    return GasTariff(gas_eur_per_m3, kwh_per_m3, site.boiler_efficiency, adders)


def balance_for_price(
    price: DayAheadPriceIngested,
    sites: Iterable[tuple[SiteMasterDataChanged, GasTariff, float]],
) -> list[BalancePriceComputed]:
    """Return each site's balance price for the price's interval, with its decision."""
    spot = price.price_eur_per_mwh
    results = []
    for site, tariff, cop in sites:
        if site.deleted or site.location.price_area != price.area:
            continue
        balance = balance_price_eur_per_mwh(cop, tariff)
        source, saving = _decision(spot, balance, cop)
        results.append(
            BalancePriceComputed(
                site_id=site.site_id,
                area=price.area,
                interval_start=price.interval_start,
                interval_end=price.interval_end,
                interval_minutes=price.interval_minutes,
                cop=cop,
                balance_price_eur_per_mwh=round(balance, 4),
                spot_price_eur_per_mwh=spot,
                preferred_source=source,
                saving_eur_per_mwh_heat=saving,
            )
        )
    return results


def _decision(spot: float | None, balance: float, cop: float) -> tuple[HeatSource | None, float | None]:
    if spot is None:
        return None, None
    source = HeatSource.HEAT_PUMP if spot < balance else HeatSource.GAS
    # Per MWh of heat, the HP needs 1/COP MWh of electricity: the price gap scales by that.
    return source, round(abs(balance - spot) / cop, 4)
