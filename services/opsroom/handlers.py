"""Topic handlers: each keeps a small read model in Redis and pushes what is urgent to the browsers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hybridpool_shared.messages import (
    BalancePriceComputed,
    BidCleared,
    BidSubmitted,
    DayAheadPriceIngested,
    ImbalancePriceIngested,
    PoolActivated,
    QuarterAggregated,
    ReactionMeasured,
    ReservePriceIngested,
    SiteMasterDataChanged,
    SitePlanComputed,
)
from hybridpool_shared.messaging import Delivery
from hybridpool_shared.timeutil import utc_now
from services.opsroom.adapters import OpsStore
from services.opsroom.domain import seconds_between
from services.opsroom.live import Broadcaster, LiveState

PriceMessage = DayAheadPriceIngested | ImbalancePriceIngested | ReservePriceIngested


def site_summary(site: SiteMasterDataChanged) -> dict[str, Any]:
    """The master data the ops room keeps per site."""
    return {
        "site_id": site.site_id,
        "make_model": site.make_model,
        "address": site.location.address,
        "area": site.location.price_area,
        "hp_electric_power_kw": site.hp_electric_power_kw,
        "hp_heat_power_kw": site.hp_heat_power_kw,
        "boiler_power_kw": site.boiler_power_kw,
    }


class Handlers:
    """The ops room's consumers."""

    def __init__(self, store: OpsStore, live: LiveState, hub: Broadcaster, quarters_kept: int) -> None:
        self.store = store
        self.live = live
        self.hub = hub
        self.quarters_kept = quarters_kept

    async def registry(self, batch: Sequence[tuple[SiteMasterDataChanged, Delivery]]) -> None:
        """Keep master-data summaries (power for capacity, labels for search)."""
        for site, _ in batch:
            if site.deleted:
                await self.store.drop_site(site.site_id)
                self.live.hp_power_kw.pop(site.site_id, None)
            else:
                await self.store.put_site(site.site_id, site_summary(site))
                self.live.hp_power_kw[site.site_id] = site.hp_electric_power_kw

    async def price(self, batch: Sequence[tuple[PriceMessage, Delivery]]) -> None:
        """Keep price curves per kind, area, product and direction."""
        for msg, delivery in batch:
            value = getattr(msg, "price_eur_per_mwh", None)
            if isinstance(msg, ReservePriceIngested):
                value = msg.price_eur_per_mw_per_h
            if value is None:
                continue
            kind = delivery.topic.removeprefix("prices.")
            curve = f"{kind}:{msg.area}:{msg.product}:{msg.direction.value}"
            await self.store.put_price(curve, msg.interval_start, value)

    async def balance(self, batch: Sequence[tuple[BalancePriceComputed, Delivery]]) -> None:
        """Keep each site's latest balance price and COP."""
        for msg, _ in batch:
            data = {
                "start": msg.interval_start.isoformat(),
                "area": msg.area,
                "cop": msg.cop,
                "balance_price_eur_per_mwh": msg.balance_price_eur_per_mwh,
                "spot_price_eur_per_mwh": msg.spot_price_eur_per_mwh,
            }
            await self.store.put_balance(msg.site_id, msg.interval_start, data)

    async def quarter(self, batch: Sequence[tuple[QuarterAggregated, Delivery]]) -> None:
        """Keep each site's recent quarter aggregates for its telemetry charts."""
        for msg, _ in batch:
            data = msg.model_dump(mode="json", include=QUARTER_FIELDS)
            await self.store.put_quarter(msg.site_id, msg.interval_start, data, self.quarters_kept)

    async def plan(self, batch: Sequence[tuple[SitePlanComputed, Delivery]]) -> None:
        """Keep the plan per site for the pool totals; raise an alarm when the planner fell back."""
        rows = [
            (
                msg.plan_id,
                msg.site_id,
                msg.first_quarter_start,
                {
                    "first_quarter_start": msg.first_quarter_start.isoformat(),
                    "hp_on": msg.hp_on,
                    "expected_hp_power_kw": msg.expected_hp_power_kw,
                    "fallback": msg.fallback,
                },
            )
            for msg, _ in batch
        ]
        await self.store.put_plans(rows)
        for msg, _ in batch:
            if msg.fallback:
                text = f"plan {msg.plan_id}: solver failed, safe fallback plan used"
                if await self.store.raise_alarm(
                    f"solver-fallback:{msg.plan_id}", "solver_fallback", text, utc_now()
                ):
                    self.hub.poke()

    async def bid(self, msg: BidSubmitted, _: Delivery) -> None:
        """Keep a submitted bid."""
        await self.store.put_bid(msg.bid_id, msg.interval_start, msg.model_dump(mode="json"))

    async def result(self, msg: BidCleared, _: Delivery) -> None:
        """Keep a bid's clearing result."""
        await self.store.put_result(msg.bid_id, msg.model_dump(mode="json"))

    async def activation(self, msg: PoolActivated, _: Delivery) -> None:
        """Keep an activation and tell the browsers at once."""
        data = msg.model_dump(mode="json")
        if await self.store.put_activation(msg.activation_id, msg.start, data):
            self.live.activations_changed = True
            self.hub.send("activation", data)

    async def reaction(self, batch: Sequence[tuple[ReactionMeasured, Delivery]]) -> None:
        """Keep measured reactions per activation and per site (reaction profile)."""
        for msg, _ in batch:
            data = {
                "site_id": msg.site_id,
                "command_id": msg.command_id,
                "responded": msg.responded,
                "t50_s": seconds_between(msg.sent_at, msg.reached_50_at),
                "t90_s": seconds_between(msg.sent_at, msg.reached_90_at),
                "expected_change_kw": msg.expected_change_kw,
                "observed_change_kw": msg.observed_change_kw,
            }
            await self.store.put_reaction(msg.activation_id, msg.site_id, msg.command_id, msg.sent_at, data)


QUARTER_FIELDS = {
    "interval_start",
    "mean_power_kw",
    "energy_kwh",
    "heat_energy_kwh",
    "cop_measured",
    "indoor_temp_min_c",
    "indoor_temp_max_c",
    "outdoor_temp_mean_c",
    "hp_running_share",
    "quality",
}
