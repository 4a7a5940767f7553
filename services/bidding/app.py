"""Wiring of the bidding service: settings, connections, subscriptions, the planning job and its API."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import asdict
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
from fastapi import HTTPException
from prometheus_client import Counter, Gauge, Histogram

from hybridpool_shared import topics
from hybridpool_shared.messages import (
    BalancePriceComputed,
    BidCleared,
    BidSubmitted,
    DayAheadPriceIngested,
    Direction,
    ReactionMeasured,
    ReservePriceIngested,
    ReserveProduct,
    SiteMasterDataChanged,
    SitePlanComputed,
    SitePoolMembershipChanged,
)
from hybridpool_shared.messages.base import utc_key
from hybridpool_shared.messaging import Delivery
from hybridpool_shared.runtime import Service, build_service, serve
from hybridpool_shared.timeutil import COPENHAGEN, floor_quarter, local_day_bounds, utc_now
from services.bidding import adapters
from services.bidding.adapters import Book, BookStore, SiteStore, TriggerClaims, full_activation_s
from services.bidding.assemble import DEFAULT_AREA, Assembled, assemble
from services.bidding.domain.inputs import Options, periods
from services.bidding.domain.planner import PlanOutcome, max_symmetric_plan, plan, pool_sizing
from services.bidding.settings import BiddingSettings

LOGGER = logging.getLogger(__name__)
DAY_AHEAD = "day_ahead"
INTRADAY = "intraday"


class Metrics:
    """The bidding service's own metrics (alarm: solver failures and fallback plans)."""

    def __init__(self, service: Service) -> None:
        registry = service.metrics.registry
        self.failures = Counter(
            "hybridpool_bidding_solver_failures",
            "Solves that failed; a fallback plan was used.",
            registry=registry,
        )
        self.fallback = Gauge(
            "hybridpool_bidding_plan_fallback", "1 if the latest plan is a fallback.", registry=registry
        )
        self.seconds = Histogram(
            "hybridpool_bidding_plan_seconds",
            "Planning job duration.",
            buckets=(1, 2, 5, 10, 20, 30, 60, 120),
            registry=registry,
        )
        self.bid_mw = Gauge(
            "hybridpool_bidding_symmetric_bid_mw", "Sum of the latest capacity bids.", registry=registry
        )


class Planner:
    """Runs planning jobs, once per triggering event, and publishes plans and bids."""

    def __init__(self, service: Service, settings: BiddingSettings) -> None:
        self.service = service
        self.settings = settings
        self.book = Book()
        self.book_store = BookStore(service.redis)
        self.sites = SiteStore(service.redis)
        self.claims = TriggerClaims(service.redis, settings.claim_stale_s())
        self.metrics = Metrics(service)
        self.lock = asyncio.Lock()

    def options(self) -> Options:
        """Planner options from settings."""
        s = self.settings
        return Options(
            time_limit_s=s.time_limit_s,
            relative_gap=s.relative_gap,
            z=s.z,
            improve_budget_s=s.improve_budget_s,
        )

    async def inputs(self, first: datetime, quarters: int) -> Assembled | None:
        """Gather master data, live state and reactions of the pooled sites, and assemble the inputs."""
        excluded = await self.sites.excluded()
        masters = {i: m for i, m in (await self.sites.all()).items() if i not in excluded}
        live = await adapters.live_states(self.service.redis, list(masters))
        states = {i: s for i, s in live.items() if i not in excluded}
        areas = {i: m.location.price_area for i, m in masters.items()}
        areas |= {i: DEFAULT_AREA for i in states if i not in areas}
        assumed = self.settings.assumed_response()
        responses = await self.sites.responses(areas, assumed)
        in_dk2 = {i: a for i, a in areas.items() if a == "DK2"}
        fast = await self.sites.responses(in_dk2, assumed, ReserveProduct.FCR_D_UP)
        return assemble(masters, states, responses, self.book, self.settings, first, quarters, fast)

    async def run(self, kind: str, now: datetime, trigger: str | None = None) -> dict[str, Any] | None:
        """Plan (once per trigger) and publish; return the summary, or None if there are no sites."""
        first, quarters = window(kind, now)
        async with self.lock:
            self.book.prune(now - timedelta(days=1))
            assembled = await self.inputs(first, quarters)
            if assembled is None:
                LOGGER.info("no sites known yet: nothing to plan")
                return None
            trigger = trigger or trigger_id(kind, first, assembled)
            claim = await self.claims.claim(trigger, utc_now().timestamp())
            if claim is None:
                return await adapters.load_latest(self.service.redis, f"plan:{trigger}")
            try:
                summary = await self.plan_and_publish(kind, assembled, trigger)
                await self.claims.finish(trigger)
            except BaseException:  # cancellation too: a stopping service gives its claim back
                await self.give_back(trigger, claim)
                raise
            return summary

    async def plan_and_publish(self, kind: str, assembled: Assembled, trigger: str) -> dict[str, Any]:
        """Plan, publish plans and bids, and store the summary; return the summary."""
        outcome = await asyncio.to_thread(plan, assembled.fleet, assembled.market, self.options(), trigger)
        self.metrics.seconds.observe(outcome.total_s)
        self.metrics.fallback.set(1 if outcome.fallback else 0)
        if outcome.fallback:
            self.metrics.failures.inc()
        await self.publish(kind, assembled, outcome)
        return await self.remember(kind, assembled, outcome)

    async def give_back(self, trigger: str, claim: str) -> None:
        """Release a failed run's claim so the next run plans the trigger again."""
        try:
            await self.claims.release(trigger, claim)
        except Exception:
            # the failed run's own error matters more; the claim goes stale and is taken over
            LOGGER.warning("could not release the claim of trigger %s", trigger, exc_info=True)

    async def publish(self, kind: str, assembled: Assembled, outcome: PlanOutcome) -> None:
        """Publish one SitePlanComputed per site, then the bids."""
        messages: list[tuple[topics.TopicSpec, Any]] = [
            (topics.POOL_PLAN, m) for m in plan_messages(assembled, outcome)
        ]
        messages += [(topics.MARKET_BIDS, b) for b in bid_messages(kind, assembled, outcome, utc_now())]
        step = self.settings.publish_concurrency
        for i in range(0, len(messages), step):
            await asyncio.gather(*(self.service.publish(spec, m) for spec, m in messages[i : i + step]))

    async def remember(self, kind: str, assembled: Assembled, outcome: PlanOutcome) -> dict[str, Any]:
        """Store the summaries the read API serves."""
        summary = plan_summary(kind, assembled, outcome)
        redis = self.service.redis
        await adapters.save_latest(redis, f"plan:{outcome.plan_id}", summary)
        await adapters.save_latest(redis, f"plan:{kind}", summary)
        if kind == DAY_AHEAD:
            self.metrics.bid_mw.set(sum(b.capacity_mw for b in outcome.capacity_bids))
            potential = await asyncio.to_thread(
                max_symmetric_plan, assembled.fleet, assembled.market, self.options()
            )
            sizing = pool_sizing(assembled.fleet, potential, self.settings.min_bid_fcr_n_mw)
            await adapters.save_latest(redis, "sizing", {"plan_id": outcome.plan_id, **asdict(sizing)})
        return summary


def window(kind: str, now: datetime) -> tuple[datetime, int]:
    """Return (first quarter, quarters): tomorrow's Copenhagen day, or the rest of today."""
    today = now.astimezone(COPENHAGEN).date()
    if kind == DAY_AHEAD:
        start, end = local_day_bounds(today + timedelta(days=1))
    else:
        start = floor_quarter(now) + timedelta(minutes=15)
        _, end = local_day_bounds(today)
        if end - start < timedelta(hours=1):
            _, end = local_day_bounds(today + timedelta(days=1))
    return start, int((end - start) / timedelta(minutes=15))


def trigger_id(kind: str, first: datetime, assembled: Assembled) -> str:
    """Identify the triggering event: the window and what the inputs are made of (sources, fleet)."""
    fleet = assembled.fleet
    basis = f"{sorted(assembled.sources.items())}|{fleet.size}|{int(fleet.online.sum())}"
    digest = hashlib.sha256(basis.encode()).hexdigest()[:8]
    if kind == DAY_AHEAD:
        day: date = first.astimezone(COPENHAGEN).date()
        return f"da-{day.isoformat()}-{digest}"
    return f"id-{utc_key(first)}-{digest}"


def plan_messages(assembled: Assembled, outcome: PlanOutcome) -> list[SitePlanComputed]:
    """One plan message per site."""
    fleet = assembled.fleet
    return [
        SitePlanComputed(
            plan_id=outcome.plan_id,
            site_id=site_id,
            first_quarter_start=assembled.market.first_quarter,
            hp_on=tuple(bool(v) for v in outcome.plan.on[i]),
            expected_hp_power_kw=tuple(float(fleet.power_kw[i]) if v else 0.0 for v in outcome.plan.on[i]),
            fallback=outcome.fallback,
        )
        for i, site_id in enumerate(fleet.site_ids)
    ]


def bid_messages(kind: str, assembled: Assembled, outcome: PlanOutcome, now: datetime) -> list[BidSubmitted]:
    """Capacity bids (day-ahead plans only) and mFRR energy bids."""
    market = assembled.market
    bids = []
    if kind == DAY_AHEAD:
        for c in outcome.capacity_bids:
            start = market.quarter_start(c.first)
            bids.append(
                BidSubmitted(
                    bid_id=f"{outcome.plan_id}:{c.area}:{c.product}:{utc_key(start)}",
                    plan_id=outcome.plan_id,
                    area=c.area,
                    product=ReserveProduct(c.product),
                    direction=Direction(c.direction),
                    capacity_mw=c.capacity_mw,
                    price_eur_per_mw_per_h=c.price_eur_per_mw_h,
                    interval_start=start,
                    interval_end=market.quarter_start(c.last),
                    interval_minutes=(c.last - c.first) * 15,
                    submitted_at=now,
                )
            )
    for e in outcome.energy_bids:
        start = market.quarter_start(e.quarter)
        bids.append(
            BidSubmitted(
                bid_id=f"{outcome.plan_id}:{e.area}:mfrr:{e.direction}:{utc_key(start)}",
                plan_id=outcome.plan_id,
                area=e.area,
                product=ReserveProduct.MFRR_ENERGY,
                direction=Direction(e.direction),
                capacity_mw=e.capacity_mw,
                price_eur_per_mwh=e.price_eur_per_mwh,
                interval_start=start,
                interval_end=start + timedelta(minutes=15),
                interval_minutes=15,
                submitted_at=now,
            )
        )
    return bids


def plan_summary(kind: str, assembled: Assembled, outcome: PlanOutcome) -> dict[str, Any]:
    """What the read API shows about a plan."""
    market = assembled.market
    return {
        "plan_id": outcome.plan_id,
        "kind": kind,
        "first_quarter_start": market.first_quarter.isoformat(),
        "quarters": market.quarters,
        "sites": assembled.fleet.size,
        "online_sites": int(assembled.fleet.online.sum()),
        "sources": assembled.sources,
        "status": outcome.status,
        "fallback": outcome.fallback,
        "reason": outcome.reason,
        "clusters": outcome.clusters,
        "solve_s": round(outcome.solve_s, 3),
        "total_s": round(outcome.total_s, 3),
        "model_gap": outcome.model_gap,
        "replanning": outcome.extra,
        "energy_cost_eur": round(outcome.energy_cost_eur, 2),
        "reserve_revenue_eur": round(outcome.reserve_revenue_eur, 2),
        "bid_price_eur_per_mw_h": outcome.bid_price_eur_per_mw_h,
        "capacity_bids": [
            asdict(b) | {"start": market.quarter_start(b.first).isoformat()} for b in outcome.capacity_bids
        ]
        if kind == DAY_AHEAD
        else [],
        "periods_without_bid": periods_without_bid(assembled, outcome) if kind == DAY_AHEAD else [],
        "energy_bids": len(outcome.energy_bids),
        "hp_on_share_by_quarter": [round(float(x), 3) for x in outcome.plan.on.mean(axis=0)],
    }


def periods_without_bid(assembled: Assembled, outcome: PlanOutcome) -> list[dict[str, Any]]:
    """Each product period without a capacity bid, with its guaranteed symmetric MW and why."""
    market = assembled.market
    bid = {(b.area, b.product, b.first) for b in outcome.capacity_bids}
    fleet = assembled.fleet
    rows = []
    for area in sorted(outcome.capability.up_mw):
        in_area = np.array([a == area for a in fleet.area], dtype=bool)
        fast_enough = int(((fleet.response > 0) & in_area & fleet.online).sum())
        both = np.minimum(outcome.capability.up_mw[area], outcome.capability.down_mw[area])
        for period in periods(market, area):
            if (area, period.product.product, period.first) in bid:
                continue
            mw = float(both[period.first : period.last].min())
            price = float(
                np.mean(
                    market.reserve_eur_per_mw_h.get(area, np.zeros(market.quarters))[
                        period.first : period.last
                    ]
                )
            )
            reason = (
                "fallback plan: no capacity is offered"
                if outcome.fallback
                else _too_slow(area, period.product.product)
                if fast_enough == 0
                else (
                    f"guaranteed symmetric {mw:.2f} MW < minimum {period.product.min_mw} MW: at "
                    f"{price:.1f} EUR/MW/h holding more does not pay, or the fleet cannot"
                )
            )
            rows.append(
                {
                    "area": area,
                    "product": period.product.product,
                    "start": market.quarter_start(period.first).isoformat(),
                    "end": market.quarter_start(period.last).isoformat(),
                    "symmetric_mw": round(mw, 3),
                    "reason": reason,
                }
            )
    return rows


def _too_slow(area: str, product: str) -> str:
    deadline = full_activation_s(ReserveProduct(product))
    return (
        f"no online site in {area} is measured (or assumed) to reach 100 % within {deadline:.0f} s, "
        f"as {product} requires"
    )


def build(settings: BiddingSettings) -> Service:
    """Create the service with its subscriptions (not yet connected)."""
    service = build_service(
        "bidding",
        settings,
        consumes=(
            topics.PRICES_DAY_AHEAD,
            topics.PRICES_RESERVE,
            topics.SITES_BALANCE_PRICE,
            topics.SITES_REGISTRY,
            topics.POOL_MEMBERSHIP,
            topics.MARKET_RESULTS,
            topics.DISPATCH_REACTIONS,
        ),
        produces=(topics.POOL_PLAN, topics.MARKET_BIDS),
    )
    planner = Planner(service, settings)

    async def load_book() -> None:
        restored = await planner.book_store.load(planner.book, utc_now())
        LOGGER.info("restored %d priced quarters from Redis", restored)

    service.on_start.append(load_book)
    _subscribe(service, planner)
    _routes(service, planner)
    service.background.append(_loop(planner))
    return service


def _subscribe(service: Service, planner: Planner) -> None:
    async def on_spot(price: DayAheadPriceIngested, _: Delivery) -> None:
        planner.book.add_spot(price)
        await planner.book_store.flush(planner.book)

    async def on_reserve(price: ReservePriceIngested, _: Delivery) -> None:
        planner.book.add_reserve(price)
        await planner.book_store.flush(planner.book)

    async def on_balance(batch: list[tuple[BalancePriceComputed, Delivery]]) -> None:
        for price, _ in batch:
            planner.book.add_balance(price)
        await planner.book_store.flush(planner.book)

    async def on_site(site: SiteMasterDataChanged, _: Delivery) -> None:
        await planner.sites.upsert(site)

    async def on_membership(change: SitePoolMembershipChanged, _: Delivery) -> None:
        await planner.sites.set_membership(change)

    async def on_result(result: BidCleared, _: Delivery) -> None:
        await adapters.save_result(service.redis, result)

    async def on_reaction(reaction: ReactionMeasured, _: Delivery) -> None:
        await planner.sites.record_reaction(reaction)

    service.consumer.subscribe(topics.PRICES_DAY_AHEAD, on_spot)
    service.consumer.subscribe(topics.PRICES_RESERVE, on_reserve)
    service.consumer.subscribe_batch(topics.SITES_BALANCE_PRICE, on_balance, max_records=2000)
    service.consumer.subscribe(topics.SITES_REGISTRY, on_site)
    service.consumer.subscribe(topics.POOL_MEMBERSHIP, on_membership)
    service.consumer.subscribe(topics.MARKET_RESULTS, on_result)
    service.consumer.subscribe(topics.DISPATCH_REACTIONS, on_reaction)


def _routes(service: Service, planner: Planner) -> None:
    api = service.api

    @api.post("/plan/run", tags=["bidding"])
    async def run_plan(kind: str = DAY_AHEAD, trigger: str | None = None) -> dict[str, Any]:
        if kind not in (DAY_AHEAD, INTRADAY):
            raise HTTPException(422, f"kind must be {DAY_AHEAD} or {INTRADAY}")
        summary = await planner.run(kind, utc_now(), trigger)
        if summary is None:
            raise HTTPException(409, "no sites known: publish master data on sites.registry first")
        return summary

    @api.get("/inputs", tags=["bidding"])
    async def inputs() -> dict[str, Any]:
        now = floor_quarter(utc_now())
        masters = await planner.sites.all()
        states = await adapters.live_states(service.redis, list(masters))
        return {
            "registered_sites": len(masters),
            "excluded_sites": len(await planner.sites.excluded()),
            "live_states": len(states),
            "spot_quarters": {area: len(v) for area, v in planner.book.spot.items()},
            "spot_quarters_next_48h": {
                area: planner.book.spot_quarters_between(area, now, now + timedelta(hours=48))
                for area in planner.book.spot
            },
            "reserve_quarters": {f"{a}:{p}": len(v) for (a, p), v in planner.book.reserve.items()},
            "balance_sites": len(planner.book.balance),
        }

    @api.get("/plan/latest", tags=["bidding"])
    async def latest_plan(kind: str = DAY_AHEAD) -> dict[str, Any]:
        return await _found(adapters.load_latest(service.redis, f"plan:{kind}"), "no plan yet")

    @api.get("/bids", tags=["bidding"])
    async def bids() -> dict[str, Any]:
        summary = await _found(adapters.load_latest(service.redis, f"plan:{DAY_AHEAD}"), "no bids yet")
        return {"plan_id": summary["plan_id"], "capacity_bids": summary["capacity_bids"]}

    @api.get("/results", tags=["bidding"])
    async def results() -> list[dict[str, Any]]:
        return await adapters.load_results(service.redis)

    @api.get("/pool/sizing", tags=["bidding"])
    async def sizing() -> dict[str, Any]:
        return await _found(adapters.load_latest(service.redis, "sizing"), "no day-ahead plan yet")


async def _found(pending: Any, message: str) -> dict[str, Any]:
    value: dict[str, Any] | None = await pending
    if value is None:
        raise HTTPException(404, message)
    return value


def _loop(planner: Planner) -> Any:
    async def plan_periodically() -> None:
        await asyncio.sleep(planner.settings.startup_delay_s)
        while True:
            planned = None
            try:
                planned = await planner.run(DAY_AHEAD, utc_now())
                if planner.settings.intraday and planned is not None:
                    await planner.run(INTRADAY, utc_now())
            except Exception:
                LOGGER.exception("planning job failed; retrying at the next interval")
                planner.metrics.failures.inc()
            # no sites yet: look again soon rather than after a whole interval
            await asyncio.sleep(planner.settings.replan_interval_s if planned else 10.0)

    return plan_periodically


def main() -> None:
    """Run the service until stopped."""
    serve(build(BiddingSettings()))
