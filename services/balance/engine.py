"""The balance service's use cases: ingest prices and COP data, compute and publish balance prices."""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

import numpy as np
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry, Counter, Histogram

from hybridpool_shared.domain.cop import CopModel, HeatingCurve, fit_cop_model
from hybridpool_shared.messages import (
    AggregateQuality,
    BalancePriceComputed,
    DayAheadPriceIngested,
    QuarterAggregated,
    SiteMasterDataChanged,
)
from hybridpool_shared.timeutil import QUARTER, floor_quarter, utc_now
from services.balance.adapters import CopStore, PriceBook, SiteView, TariffStore
from services.balance.domain import (
    BalanceMatrix,
    CopPolicy,
    OutdoorReading,
    TariffDefaults,
    active_sites,
    balance_matrix,
    cop_matrix,
    outdoor_forecast,
    resolve_tariffs,
    to_messages,
)
from services.balance.settings import BalanceSettings

LOGGER = logging.getLogger(__name__)
Publish = Callable[[BalancePriceComputed], Awaitable[None]]
SITE_CHUNK = 5000


def expand_price(price: DayAheadPriceIngested, dkk_per_eur: float) -> dict[datetime, float]:
    """Return the price per quarter-hour it covers (an hourly price repeats over its quarters), in EUR."""
    eur = price.price_eur_per_mwh
    if eur is None:
        assert price.price_dkk_per_mwh is not None  # the message guarantees one of them
        eur = price.price_dkk_per_mwh / dkk_per_eur
    count = price.interval_minutes // 15
    return {price.interval_start + i * QUARTER: eur for i in range(count)}


def usable_sample(agg: QuarterAggregated) -> bool:
    """A quarter is a COP sample when measured with the heat pump running most of it."""
    return (
        agg.quality is AggregateQuality.MEASURED
        and agg.cop_measured is not None
        and agg.outdoor_temp_mean_c is not None
        and (agg.hp_running_share is None or agg.hp_running_share >= 0.5)
    )


def inputs_changed(old: SiteMasterDataChanged | None, new: SiteMasterDataChanged) -> bool:
    """True when a known site stays registered with another boiler efficiency or price area."""
    if old is None or new.deleted:
        return False
    return (
        old.boiler_efficiency != new.boiler_efficiency or old.location.price_area != new.location.price_area
    )


class BalanceMetrics:
    """The balance service's own Prometheus metrics."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.published = Counter(
            "hybridpool_balance_prices_published_total", "Balance prices published.", registry=registry
        )
        self.compute_seconds = Histogram(
            "hybridpool_balance_compute_seconds",
            "Time to compute one chunk of sites × quarters.",
            buckets=(0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=registry,
        )
        self.fits = Counter("hybridpool_balance_cop_fits_total", "Site COP models fitted.", registry=registry)


class BalanceEngine:
    """Loads inputs from Redis, computes with numpy, publishes per site and quarter-hour."""

    def __init__(
        self,
        redis: aioredis.Redis,
        settings: BalanceSettings,
        publish: Publish,
        metrics: BalanceMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or BalanceMetrics(CollectorRegistry())
        self.sites = SiteView(redis)
        self.prices = PriceBook(redis)
        self.cop = CopStore(redis)
        self.tariffs = TariffStore(redis)
        self.publish = publish
        self.policy = CopPolicy(
            default_cop=settings.default_cop,
            type_model=CopModel(
                efficiency=settings.type_cop_efficiency,
                curve=HeatingCurve(settings.type_curve_base_c, settings.type_curve_slope),
            ),
            seasonal_outdoor_c=settings.seasonal_outdoor_c,
            outdoor_max_age=timedelta(hours=settings.outdoor_max_age_h),
        )
        self.defaults = TariffDefaults(
            settings.gas_price_eur_per_m3, settings.gas_kwh_per_m3, settings.electricity_adders_eur_per_mwh
        )

    async def compute(
        self, sites: Sequence[SiteMasterDataChanged], starts: Sequence[datetime], area: str | None
    ) -> BalanceMatrix:
        """Balance prices for sites × quarter starts (spot from the area's stored prices)."""
        ids = [s.site_id for s in sites]
        now = utc_now()
        outdoor = outdoor_forecast(await self.cop.outdoor(ids), starts, now, self.policy)
        cop = cop_matrix(await self.cop.models(ids), outdoor, self.policy)
        efficiency = np.array([s.boiler_efficiency for s in sites])
        tariffs = resolve_tariffs(ids, efficiency, starts, await self.tariffs.all(), self.defaults)
        spot = await self.prices.spots(area, starts) if area else np.full(len(starts), np.nan)
        return balance_matrix(cop, tariffs, spot)

    async def compute_fleet(
        self, sites: Sequence[SiteMasterDataChanged], starts: Sequence[datetime], area: str
    ) -> BalanceMatrix:
        """Like compute, in chunks of sites so the temporaries of a large fleet stay small."""
        parts = [
            await self.compute(sites[i : i + SITE_CHUNK], starts, area)
            for i in range(0, len(sites), SITE_CHUNK)
        ]
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return await self.compute([], starts, area)
        return BalanceMatrix(
            cop=np.concatenate([p.cop for p in parts]),
            balance_eur_per_mwh=np.concatenate([p.balance_eur_per_mwh for p in parts]),
            spot_eur_per_mwh=parts[0].spot_eur_per_mwh,
            heat_pump=np.concatenate([p.heat_pump for p in parts]),
            saving_eur_per_mwh_heat=np.concatenate([p.saving_eur_per_mwh_heat for p in parts]),
        )

    async def compute_and_publish(
        self, sites: Sequence[SiteMasterDataChanged], starts: Sequence[datetime], area: str
    ) -> int:
        """Compute and publish balance prices for sites of one area; return how many were published."""
        sent = 0
        for first in range(0, len(sites), SITE_CHUNK):
            chunk = sites[first : first + SITE_CHUNK]
            with self.metrics.compute_seconds.time():
                matrix = await self.compute(chunk, starts, area)
            messages = to_messages(matrix, [s.site_id for s in chunk], [area] * len(chunk), starts)
            await self._publish_all(messages)
            await self.cop.set_cop_used({s.site_id: float(matrix.cop[row, 0]) for row, s in enumerate(chunk)})
            sent += len(messages)
            self.metrics.published.inc(len(messages))
        return sent

    async def _publish_all(self, messages: list[BalancePriceComputed]) -> None:
        step = self.settings.publish_concurrency
        for first in range(0, len(messages), step):
            await asyncio.gather(*(self.publish(m) for m in messages[first : first + step]))

    def publishable(self, starts: Sequence[datetime]) -> list[datetime]:
        """Quarters recent enough to publish (older replayed prices are stored, not published)."""
        horizon = utc_now() - timedelta(hours=self.settings.publish_past_h)
        return sorted(s for s in starts if s + QUARTER > horizon)

    async def on_prices(self, prices: Sequence[DayAheadPriceIngested]) -> int:
        """Store a batch of day-ahead prices; publish balance prices of every site in their areas."""
        by_area: dict[str, dict[datetime, float]] = defaultdict(dict)
        for price in prices:
            by_area[price.area].update(expand_price(price, self.settings.dkk_per_eur))
        sites = await self.sites.all()
        sent = 0
        for area, quarter_prices in by_area.items():
            await self.prices.put(area, quarter_prices)
            starts = self.publishable(list(quarter_prices))
            if starts:
                sent += await self.compute_and_publish(active_sites(sites, area), starts, area)
            await self.prices.trim(area, utc_now() - timedelta(days=self.settings.price_retention_days))
        return sent

    async def republish(self, sites: Sequence[SiteMasterDataChanged]) -> int:
        """Recompute the sites' balance prices for every stored quarter from now on and publish them."""
        since = floor_quarter(utc_now())
        sent = 0
        by_area: dict[str, list[SiteMasterDataChanged]] = defaultdict(list)
        for site in active_sites(sites):
            by_area[site.location.price_area].append(site)
        for area, members in by_area.items():
            starts = await self.prices.starts_from(area, since)
            if starts:
                sent += await self.compute_and_publish(members, starts, area)
        return sent

    async def on_site(self, site: SiteMasterDataChanged) -> int:
        """Update the site view; republish when an existing site's balance inputs changed."""
        old = await self.sites.get(site.site_id)
        # The change is remembered with the store and forgotten only after publishing: a redelivery
        # after a failed publish finds the site already stored and must still republish.
        if not await self.sites.upsert(site, changed=inputs_changed(old, site)):
            return 0
        sent = await self.republish([site])
        await self.sites.republished(site.site_id)
        return sent

    async def on_quarters(self, aggregates: Sequence[QuarterAggregated]) -> int:
        """Learn from 15-minute aggregates; refit COP models; republish sites whose COP moved."""
        samples: dict[str, list[tuple[datetime, float, float]]] = defaultdict(list)
        readings: dict[str, OutdoorReading] = {}
        for agg in aggregates:
            if agg.outdoor_temp_mean_c is not None:
                reading = OutdoorReading(agg.outdoor_temp_mean_c, agg.interval_end)
                if agg.site_id not in readings or reading.measured_at >= readings[agg.site_id].measured_at:
                    readings[agg.site_id] = reading
            if usable_sample(agg):
                sample = (
                    agg.interval_start,
                    float(agg.outdoor_temp_mean_c or 0.0),
                    float(agg.cop_measured or 0.0),
                )
                samples[agg.site_id].append(sample)
        keep_after = utc_now() - timedelta(days=self.settings.fit_window_days)
        await self.cop.add_samples(samples, keep_after)
        await self.cop.set_outdoor(readings)
        await self._refit(samples)
        return await self._republish_moved(sorted(set(readings) | set(samples)))

    async def _refit(self, samples: dict[str, list[tuple[datetime, float, float]]]) -> None:
        models = await self.cop.models(list(samples))
        for (site, rows), model in zip(samples.items(), models, strict=True):
            due = any(self._refit_due(site, t) for t, _, _ in rows)
            if model is not None and not due:
                continue
            outdoor, cop = await self.cop.samples(site)
            fitted = fit_cop_model(outdoor, cop, self.policy.type_model, self.settings.fit_min_samples)
            if fitted.fitted:
                await self.cop.put_model(site, fitted)
                self.metrics.fits.inc()

    def _refit_due(self, site: str, quarter_start: datetime) -> bool:
        # Staggered by site so a large fleet does not refit all at once.
        offset = zlib.crc32(site.encode())
        return (int(quarter_start.timestamp() // 900) + offset) % self.settings.refit_every_quarters == 0

    async def _republish_moved(self, site_ids: list[str]) -> int:
        if not site_ids:
            return 0
        sites = await self.sites.many(site_ids)
        if not sites:
            return 0
        now = floor_quarter(utc_now())
        current = (await self.compute(sites, [now], None)).cop[:, 0]
        used = await self.cop.cop_used([s.site_id for s in sites])
        moved = [
            site
            for site, cop, old in zip(sites, current, used, strict=True)
            if old is None or abs(cop - old) > self.settings.cop_change_threshold
        ]
        return await self.republish(moved) if moved else 0
