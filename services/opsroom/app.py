"""Wiring of the opsroom service: settings, connections, subscriptions, aggregation loop and HTTP routes."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

from hybridpool_shared import topics
from hybridpool_shared.messages import PoolActivated, SitePoolMembershipChanged
from hybridpool_shared.runtime import Service, build_service, serve
from services.opsroom import api
from services.opsroom.adapters import OpsStore
from services.opsroom.domain import Freshness
from services.opsroom.handlers import Handlers
from services.opsroom.live import Aggregator, Broadcaster, LiveState
from services.opsroom.registry_client import BiddingClient, DispatchClient, RegistryClient
from services.opsroom.settings import OpsroomSettings

CONSUMES = (
    topics.SITES_REGISTRY,
    topics.PRICES_DAY_AHEAD,
    topics.PRICES_IMBALANCE,
    topics.PRICES_RESERVE,
    topics.SITES_BALANCE_PRICE,
    topics.SITES_TELEMETRY_QUARTER,
    topics.POOL_PLAN,
    topics.MARKET_BIDS,
    topics.MARKET_RESULTS,
    topics.MARKET_ACTIVATIONS,
    topics.DISPATCH_REACTIONS,
)


def build(settings: OpsroomSettings) -> Service:
    """Create the service with its subscriptions, live loop and web page (not yet connected)."""
    service = build_service(
        "opsroom",
        settings,
        consumes=CONSUMES,
        produces=(topics.MARKET_ACTIVATIONS, topics.POOL_MEMBERSHIP),
        title="hybridpool ops room",
    )
    store = OpsStore(service.redis)
    hub = Broadcaster()
    live = LiveState()
    fresh = Freshness(settings.stale_after_s, settings.offline_after_s)
    registry = RegistryClient(settings.registry_url, settings.visible_cache_s)
    bidding = BiddingClient(settings.bidding_url, registry.http)
    dispatch = DispatchClient(settings.dispatch_url, registry.http)
    aggregator = Aggregator(
        store, live, hub, fresh, settings.tick_s, settings.stale_alarm_share, reports=dispatch.report
    )
    handlers = Handlers(store, live, hub, settings.telemetry_quarters_kept)
    _subscribe(service, handlers)

    async def publish_activation(message: PoolActivated) -> None:
        await service.publish(topics.MARKET_ACTIVATIONS, message)

    async def publish_membership(message: SitePoolMembershipChanged) -> None:
        await service.publish(topics.POOL_MEMBERSHIP, message)

    async def close_streams_on_stop() -> None:
        chain_stop_signals(hub.close)

    service.on_start.append(aggregator.load)
    service.on_start.append(close_streams_on_stop)
    service.background.append(aggregator.run)
    ctx = api.Context(
        store=store,
        registry=registry,
        bidding=bidding,
        dispatch=dispatch,
        hub=hub,
        aggregator=aggregator,
        publish_activation=publish_activation,
        publish_membership=publish_membership,
        fresh=fresh,
        purpose=settings.purpose,
        session_ttl_s=settings.session_ttl_s,
        cookie_secure=settings.cookie_secure,
    )
    api.mount(service.api, ctx)
    return service


def chain_stop_signals(on_stop: Callable[[], None]) -> None:
    """Call on_stop first when SIGINT/SIGTERM arrives, then the server's own handler.

    Uvicorn waits for open responses before it stops; server-sent event streams never end by
    themselves, so without this an open browser holds a Ctrl-C up for the graceful timeout.
    """
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(sig)

        def handler(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
            loop.call_soon_threadsafe(on_stop)
            if callable(previous):
                previous(signum, frame)
            elif previous == signal.SIG_DFL:
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)

        signal.signal(sig, handler)


def _subscribe(service: Service, h: Handlers) -> None:
    sub, batch = service.consumer.subscribe, service.consumer.subscribe_batch
    batch(topics.SITES_REGISTRY, h.registry)
    for spec in (topics.PRICES_DAY_AHEAD, topics.PRICES_IMBALANCE, topics.PRICES_RESERVE):
        batch(spec, h.price)
    batch(topics.SITES_BALANCE_PRICE, h.balance)
    batch(topics.SITES_TELEMETRY_QUARTER, h.quarter)
    batch(topics.POOL_PLAN, h.plan)
    sub(topics.MARKET_BIDS, h.bid)
    sub(topics.MARKET_RESULTS, h.result)
    sub(topics.MARKET_ACTIVATIONS, h.activation)
    batch(topics.DISPATCH_REACTIONS, h.reaction)


def main() -> None:
    """Run the service until stopped."""
    serve(build(OpsroomSettings()))
