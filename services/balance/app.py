"""Wiring of the balance service: settings, connections, subscriptions."""

from __future__ import annotations

import asyncio

from hybridpool_shared import topics
from hybridpool_shared.messages import DayAheadPriceIngested, SiteMasterDataChanged
from hybridpool_shared.messaging import Delivery
from hybridpool_shared.runtime import Service, build_service, serve, skeleton_handler
from services.balance.adapters import SiteView
from services.balance.domain import balance_for_price, tariff_for
from services.balance.settings import BalanceSettings

PUBLISH_CONCURRENCY = 64


def build(settings: BalanceSettings) -> Service:
    """Create the service with its subscriptions (not yet connected)."""
    service = build_service(
        "balance",
        settings,
        consumes=(topics.SITES_REGISTRY, topics.PRICES_DAY_AHEAD, topics.SITES_TELEMETRY_QUARTER),
        produces=(topics.SITES_BALANCE_PRICE,),
    )
    sites = SiteView(service.redis)

    async def on_site(site: SiteMasterDataChanged, _: Delivery) -> None:
        await sites.upsert(site)

    async def on_price(price: DayAheadPriceIngested, _: Delivery) -> None:
        inputs = [
            (
                site,
                tariff_for(
                    site,
                    settings.gas_price_eur_per_m3,
                    settings.gas_kwh_per_m3,
                    settings.electricity_adders_eur_per_mwh,
                ),
                settings.default_cop,
            )
            for site in await sites.all()
        ]
        results = balance_for_price(price, inputs)
        for start in range(0, len(results), PUBLISH_CONCURRENCY):
            chunk = results[start : start + PUBLISH_CONCURRENCY]
            await asyncio.gather(*(service.publish(topics.SITES_BALANCE_PRICE, r) for r in chunk))

    service.consumer.subscribe(topics.SITES_REGISTRY, on_site)
    service.consumer.subscribe(topics.PRICES_DAY_AHEAD, on_price)
    service.consumer.subscribe(topics.SITES_TELEMETRY_QUARTER, skeleton_handler(service.name))
    return service


def main() -> None:
    """Run the service until stopped."""
    serve(build(BalanceSettings()))
