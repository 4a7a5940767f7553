"""Wiring of the market_sim service: clears bids, draws activations, emits frequency, settles."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

from fastapi import HTTPException

from hybridpool_shared import topics
from hybridpool_shared.domain.pooling import synthetic_reserve_price_eur_per_mw_h
from hybridpool_shared.messages import BidSubmitted, FrequencyMeasured, ReservePriceIngested
from hybridpool_shared.messages.base import utc_key
from hybridpool_shared.messaging import Delivery
from hybridpool_shared.runtime import Service, build_service, serve
from hybridpool_shared.timeutil import floor_quarter, utc_now
from services.market_sim import domain
from services.market_sim.adapters import Ledger, ReservePrices, load_frequency, load_replay
from services.market_sim.settings import MarketSimSettings

LOGGER = logging.getLogger(__name__)


class Market:
    """The simulated TSO: its prices, its ledger and its scenario."""

    def __init__(self, service: Service, settings: MarketSimSettings) -> None:
        self.service = service
        self.settings = settings
        self.ledger = Ledger(service.redis)
        self.reserve = ReservePrices()
        self.replay = load_replay(settings.mfrr_replay_file)
        self.frequency_trace = load_frequency(settings.frequency_replay_file)

    async def scenario(self) -> domain.Scenario:
        """Return the current scenario (unknown names fall back to quiet)."""
        name = await self.ledger.scenario(self.settings.scenario)
        try:
            return domain.Scenario(name)
        except ValueError:
            return domain.Scenario.QUIET

    async def mfrr(self, area: str, start: Any) -> domain.MfrrQuarter:
        """Replayed mFRR quarter if present, else synthetic."""
        replayed = self.replay.get((area, utc_key(start)))
        if replayed is not None:
            return replayed
        return domain.synthetic_mfrr(self.settings.seed, start, await self.scenario())

    async def on_bid(self, bid: BidSubmitted, _: Delivery) -> None:
        """Clear a bid once; a redelivered bid gets its earlier result again."""
        result = await self.ledger.result_for(bid.bid_id)
        if result is None:
            now = utc_now()
            refused = domain.refuse(bid, now)
            if refused is not None:
                result, revenue = refused, 0.0
            elif domain.is_capacity(bid):
                clearing = self.reserve.mean(
                    bid.area, bid.product.value, bid.interval_start, bid.interval_minutes
                )
                if clearing is None:
                    clearing = synthetic_reserve_price_eur_per_mw_h(bid.product.value, bid.interval_start)
                result = domain.clear_capacity(bid, round(clearing, 2), now)
                revenue = domain.capacity_revenue_eur(bid, result)
            else:
                result = domain.clear_energy(bid, await self.mfrr(bid.area, bid.interval_start), now)
                revenue = 0.0
            await self.ledger.record(bid, result, revenue, domain.is_capacity(bid))
        await self.service.publish(topics.MARKET_RESULTS, result)

    async def activate_due(self) -> None:
        """Draw the activation of each accepted energy bid of the current quarter, once per bid."""
        quarter = floor_quarter(utc_now())
        for bid in await self.ledger.energy_bids(quarter):
            if not await self.ledger.is_drawn(bid.bid_id):
                await self.activate(bid, quarter)

    async def activate(self, bid: BidSubmitted, quarter: datetime) -> None:
        """Draw one bid's activation, publish it and settle it; mark the bid drawn only after all three."""
        # A failure leaves the bid undrawn, so the next tick publishes again (at least once); dispatch
        # ignores an activation_id it has already seen, and the settlement line is keyed by it.
        mfrr = await self.mfrr(bid.area, quarter)
        activation = domain.activation_for(bid, mfrr, utc_now())
        if activation is None:
            await self.ledger.mark_drawn(bid.bid_id)
            return
        price = mfrr.up_price_eur_per_mwh if bid.direction.value == "up" else mfrr.down_price_eur_per_mwh
        await self.service.publish(topics.MARKET_ACTIVATIONS, activation)
        await self.ledger.record_activation(activation, domain.activation_revenue_eur(activation, price))

    def frequency(self, area: str, at: Any, scenario: domain.Scenario) -> float:
        """The replayed trace if configured, else the seeded synthetic one."""
        if self.frequency_trace:
            return domain.replayed_frequency_hz(self.frequency_trace, at)
        return domain.frequency_hz(self.settings.seed, area, at, scenario)

    async def emit_frequency(self) -> None:
        """Publish one frequency sample per area for the current second."""
        now = utc_now().replace(microsecond=0)
        scenario = await self.scenario()
        for area in [a.strip() for a in self.settings.frequency_areas.split(",") if a.strip()]:
            hz = self.frequency(area, now, scenario)
            await self.service.publish(
                topics.GRID_FREQUENCY, FrequencyMeasured(area=area, measured_at=now, frequency_hz=hz)
            )


def build(settings: MarketSimSettings) -> Service:
    """Create the service with its subscriptions (not yet connected)."""
    service = build_service(
        "market_sim",
        settings,
        consumes=(topics.MARKET_BIDS, topics.PRICES_RESERVE),
        produces=(topics.MARKET_RESULTS, topics.MARKET_ACTIVATIONS, topics.GRID_FREQUENCY),
    )
    market = Market(service, settings)

    async def on_reserve(price: ReservePriceIngested, _: Delivery) -> None:
        market.reserve.add(price)

    service.consumer.subscribe(topics.MARKET_BIDS, market.on_bid)
    service.consumer.subscribe(topics.PRICES_RESERVE, on_reserve)
    service.background.append(_every(settings.activation_tick_s, market.activate_due, "activations"))
    if settings.frequency_enabled:
        service.background.append(_every(1.0, market.emit_frequency, "frequency"))
    _routes(service, market)
    return service


def _every(period_s: float, job: Any, name: str) -> Any:
    async def loop() -> None:
        while True:
            try:
                await job()
            except Exception:
                LOGGER.exception("%s job failed; continuing", name)
            await asyncio.sleep(period_s)

    loop.__name__ = name
    return loop


def _routes(service: Service, market: Market) -> None:
    api = service.api

    @api.get("/settlement", tags=["market"])
    async def settlement() -> dict[str, Any]:
        return await market.ledger.settlement()

    @api.get("/scenario", tags=["market"])
    async def scenario() -> dict[str, str]:
        return {"scenario": (await market.scenario()).value}

    @api.put("/scenario/{name}", tags=["market"])
    async def set_scenario(name: str) -> dict[str, str]:
        try:
            chosen = domain.Scenario(name)
        except ValueError as exc:
            raise HTTPException(422, f"scenario must be one of {[s.value for s in domain.Scenario]}") from exc
        await market.ledger.set_scenario(chosen.value)
        return {"scenario": chosen.value}

    @api.get("/frequency", tags=["market"])
    async def frequency(area: str = "DK2", seconds: int = 60) -> list[dict[str, Any]]:
        now = utc_now().replace(microsecond=0)
        chosen = await market.scenario()
        return [
            {
                "at": (now - timedelta(seconds=s)).isoformat(),
                "hz": market.frequency(area, now - timedelta(seconds=s), chosen),
            }
            for s in range(min(seconds, 3600))
        ]


def main() -> None:
    """Run the service until stopped."""
    serve(build(MarketSimSettings()))
