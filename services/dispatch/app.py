"""Wiring of the dispatch service: settings, connections, subscriptions, the closed loop, HTTP API."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any, Literal

from fastapi import HTTPException, Query
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from hybridpool_shared import topics
from hybridpool_shared.messages import (
    BalancePriceComputed,
    BidCleared,
    BidSubmitted,
    CommandAcknowledged,
    Direction,
    FrequencyMeasured,
    PoolActivated,
    SiteMasterDataChanged,
    SitePlanComputed,
    SitePoolMembershipChanged,
    TelemetryReported,
)
from hybridpool_shared.messaging import Delivery
from hybridpool_shared.runtime import Service, build_service, serve
from services.dispatch.adapters import CommandPublisher
from services.dispatch.dispatcher import ACTIVATION_PRODUCTS, Dispatcher
from services.dispatch.metrics import DispatchMetrics
from services.dispatch.settings import DispatchSettings

LOGGER = logging.getLogger(__name__)
MAX_TEST_DURATION_S = 4 * 3600


class TestActivationRequest(BaseModel):
    """A prequalification-style test: a step of mw in one direction for duration_s, starting now."""

    model_config = ConfigDict(extra="forbid")

    product: Literal["fcr-n", "fcr_n", "fcr-d-up", "fcr-d-down", "mfrr", "mfrr_energy"]
    direction: Direction = Direction.UP
    mw: float = Field(gt=0, le=1000)
    duration_s: float = Field(gt=0, le=MAX_TEST_DURATION_S)


def build(settings: DispatchSettings) -> Service:
    """Create the service with its subscriptions (not yet connected)."""
    service = build_service(
        "dispatch",
        settings,
        consumes=(
            topics.MARKET_ACTIVATIONS,
            topics.GRID_FREQUENCY,
            topics.POOL_PLAN,
            topics.SITES_TELEMETRY,
            topics.DISPATCH_ACKS,
            topics.SITES_REGISTRY,
            topics.POOL_MEMBERSHIP,
            topics.SITES_BALANCE_PRICE,
            topics.MARKET_BIDS,
            topics.MARKET_RESULTS,
        ),
        produces=(topics.DISPATCH_COMMANDS, topics.DISPATCH_REACTIONS),
    )
    metrics = DispatchMetrics(service.metrics.registry)
    commands_out = CommandPublisher(
        settings.resolved_kafka_bootstrap(),
        idempotence=settings.kafka_idempotence,
        client_id="hybridpool-dispatch",
    )
    dispatcher = Dispatcher(settings, service.redis, service.publish, metrics, commands_out=commands_out)
    _subscribe(service, dispatcher)
    _routes(service, dispatcher)

    async def load_state() -> None:
        await commands_out.start()
        n = await dispatcher.load_live_state()
        LOGGER.info("fleet seeded from %d live site states", n)
        LOGGER.info("resumed %d accepted frequency-reserve holds", await dispatcher.resume_holds())

    async def closed_loop() -> None:
        try:
            while True:
                try:
                    await dispatcher.tick()
                except Exception:
                    LOGGER.exception("dispatch tick failed")
                await asyncio.sleep(settings.tick_s)
        finally:
            await commands_out.stop()

    service.on_start.append(load_state)
    service.background.append(closed_loop)
    return service


def _subscribe(service: Service, d: Dispatcher) -> None:
    async def activation(msg: PoolActivated, _: Delivery) -> None:
        await d.on_activation(msg)

    async def frequency(msg: FrequencyMeasured, _: Delivery) -> None:
        d.on_frequency(msg)

    async def plan(batch: list[tuple[SitePlanComputed, Delivery]]) -> None:
        for msg, _ in batch:
            d.on_plan(msg)

    async def telemetry(batch: list[tuple[TelemetryReported, Delivery]]) -> None:
        d.on_telemetry([m for m, _ in batch])

    async def acks(batch: list[tuple[CommandAcknowledged, Delivery]]) -> None:
        await d.on_acks([m for m, _ in batch])

    async def registry(batch: list[tuple[SiteMasterDataChanged, Delivery]]) -> None:
        for msg, _ in batch:
            d.on_master(msg)

    async def membership(batch: list[tuple[SitePoolMembershipChanged, Delivery]]) -> None:
        for msg, _ in batch:
            d.on_membership(msg)

    async def prices(batch: list[tuple[BalancePriceComputed, Delivery]]) -> None:
        for msg, _ in batch:
            d.on_price(msg)

    async def bid(msg: BidSubmitted, _: Delivery) -> None:
        await d.on_bid(msg)

    async def result(msg: BidCleared, _: Delivery) -> None:
        await d.on_result(msg)

    service.consumer.subscribe(topics.MARKET_ACTIVATIONS, activation)
    service.consumer.subscribe(topics.MARKET_BIDS, bid)
    service.consumer.subscribe(topics.MARKET_RESULTS, result)
    service.consumer.subscribe(topics.GRID_FREQUENCY, frequency)
    service.consumer.subscribe_batch(topics.POOL_PLAN, plan)
    service.consumer.subscribe_batch(topics.SITES_TELEMETRY, telemetry, max_records=2000)
    service.consumer.subscribe_batch(topics.DISPATCH_ACKS, acks, max_records=2000)
    service.consumer.subscribe_batch(topics.SITES_REGISTRY, registry)
    service.consumer.subscribe_batch(topics.POOL_MEMBERSHIP, membership)
    service.consumer.subscribe_batch(topics.SITES_BALANCE_PRICE, prices)


def _routes(service: Service, d: Dispatcher) -> None:
    api = service.api

    @api.post("/activations/test", tags=["dispatch"], status_code=202)
    async def start_test(req: TestActivationRequest) -> dict[str, Any]:
        """Start a prequalification-style step activation on the live pool."""
        msg = d.test_activation(req.product, req.direction, req.mw, req.duration_s)
        await d.on_activation(msg, follow_frequency=False)
        return {"activation_id": msg.activation_id, "start": msg.start, "end": msg.end}

    @api.get("/activations", tags=["dispatch"])
    async def activations() -> list[dict[str, Any]]:
        """List activations being served or finished by this worker."""
        return d.status()

    @api.get("/activations/{activation_id}/report", tags=["dispatch"], response_model=None)
    async def report(
        activation_id: str, format: Annotated[Literal["json", "csv"], Query()] = "json"
    ) -> Response | dict[str, Any]:
        """The activation's response curve and compliance verdict, as JSON or CSV."""
        rep = d.report(activation_id) or await d.reports.get(activation_id)
        if rep is None:
            raise HTTPException(404, f"no activation {activation_id}")
        if format == "csv":
            return PlainTextResponse(rep.curve_csv(), media_type="text/csv")
        body: dict[str, Any] = rep.model_dump(mode="json")
        body["finished"] = activation_id not in d.loops or d.loops[activation_id].spec.end_s <= d.clock()
        return body

    @api.get("/commands", tags=["dispatch"])
    async def commands(
        site_id: str = "", activation_id: str = "", limit: Annotated[int, Query(ge=1, le=100_000)] = 1000
    ) -> list[dict[str, Any]]:
        """The command log (sent, re-sent, acks), oldest first."""
        return await d.log.query(site_id=site_id, activation_id=activation_id, limit=limit)

    @api.get("/reactions/{site_id}/profile", tags=["dispatch"])
    async def profile(site_id: str) -> dict[str, Any]:
        """A site's rolling reaction profile (also in Redis under dispatch:reaction_profile:<site_id>)."""
        prof = await d.profiles.get(site_id)
        if prof is None:
            raise HTTPException(404, f"no reactions measured for {site_id}")
        return prof.model_dump(mode="json")

    @api.get("/capacity", tags=["dispatch"])
    async def capacity() -> dict[str, float]:
        """Up and down capacity (kW) that could be switched now."""
        return d.capacity_kw(d.clock())


def main() -> None:
    """Run the service until stopped."""
    serve(build(DispatchSettings()))


__all__ = ["ACTIVATION_PRODUCTS", "build", "main"]
