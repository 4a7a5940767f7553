"""Wiring of the balance service: settings, connections, subscriptions, HTTP reads."""

from __future__ import annotations

import logging

from hybridpool_shared import topics
from hybridpool_shared.messages import (
    BalancePriceComputed,
    DayAheadPriceIngested,
    QuarterAggregated,
    SiteMasterDataChanged,
)
from hybridpool_shared.messaging import Delivery
from hybridpool_shared.runtime import Service, build_service, serve
from services.balance.adapters import TARIFF_LIST
from services.balance.api import mount
from services.balance.engine import BalanceEngine, BalanceMetrics
from services.balance.settings import BalanceSettings

LOGGER = logging.getLogger(__name__)


def build(settings: BalanceSettings) -> Service:
    """Create the service with its subscriptions (not yet connected)."""
    service = build_service(
        "balance",
        settings,
        consumes=(topics.SITES_REGISTRY, topics.PRICES_DAY_AHEAD, topics.SITES_TELEMETRY_QUARTER),
        produces=(topics.SITES_BALANCE_PRICE,),
        title="hybridpool balance: per-site gas-versus-heat-pump balance prices",
    )

    async def publish(message: BalancePriceComputed) -> None:
        await service.publish(topics.SITES_BALANCE_PRICE, message)

    engine = BalanceEngine(service.redis, settings, publish, BalanceMetrics(service.metrics.registry))

    async def on_site(site: SiteMasterDataChanged, _: Delivery) -> None:
        await engine.on_site(site)

    async def on_prices(batch: list[tuple[DayAheadPriceIngested, Delivery]]) -> None:
        sent = await engine.on_prices([price for price, _ in batch])
        LOGGER.info("%s prices → %s balance prices published", len(batch), sent)

    async def on_quarters(batch: list[tuple[QuarterAggregated, Delivery]]) -> None:
        await engine.on_quarters([agg for agg, _ in batch])

    async def load_tariffs() -> None:
        if settings.tariffs_file is not None:
            await engine.tariffs.replace(TARIFF_LIST.validate_json(settings.tariffs_file.read_bytes()))

    service.consumer.subscribe(topics.SITES_REGISTRY, on_site)
    service.consumer.subscribe_batch(topics.PRICES_DAY_AHEAD, on_prices, max_records=500)
    service.consumer.subscribe_batch(topics.SITES_TELEMETRY_QUARTER, on_quarters, max_records=1000)
    service.on_start.append(load_tariffs)
    mount(service.api, engine, settings)
    return service


def main() -> None:
    """Run the service until stopped."""
    serve(build(BalanceSettings()))
