"""Live aggregation: every tick the fleet is summarised on the server and one small event goes to browsers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from hybridpool_shared.timeutil import utc_now
from services.opsroom.adapters import OpsStore
from services.opsroom.domain import (
    CurvePoint,
    FleetSummary,
    Freshness,
    assess,
    at_risk,
    committed_mw,
    delivered_kw,
    summarise,
)

LOGGER = logging.getLogger(__name__)
QUEUE_SIZE = 32
AFTER_END = timedelta(seconds=60)  # keep sampling a little after the end: the ramp back is visible
HEARTBEAT_S = 15.0
ReportSource = Callable[[str], Awaitable[dict[str, Any] | None]]
CLOSE = ""  # the frame that ends a stream


class Broadcaster:
    """Fans server-sent events out to every connected browser; a slow browser loses old events only."""

    def __init__(self) -> None:
        self.queues: set[asyncio.Queue[str]] = set()
        self.wake = asyncio.Event()
        self.closed = False

    def close(self) -> None:
        """End every stream (the server is stopping: open streams would hold its shutdown up)."""
        self.closed = True
        for queue in self.queues:
            with contextlib.suppress(asyncio.QueueEmpty):
                queue.get_nowait()
            queue.put_nowait(CLOSE)

    def send(self, event: str, data: Any) -> None:
        """Queue one event for every subscriber."""
        frame = f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
        for queue in self.queues:
            if self.closed:
                return
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
            queue.put_nowait(frame)

    def poke(self) -> None:
        """Ask the aggregation loop to run now instead of at its next tick."""
        self.wake.set()

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[str]]:
        """Register a browser for the lifetime of its stream."""
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=QUEUE_SIZE)
        self.queues.add(queue)
        try:
            yield queue
        finally:
            self.queues.discard(queue)


@dataclass
class LiveState:
    """What the loop keeps in memory between ticks."""

    hp_power_kw: dict[str, float] = field(default_factory=dict)
    overview: dict[str, Any] = field(default_factory=dict)
    curves: dict[str, list[CurvePoint]] = field(default_factory=dict)
    activations_changed: bool = False
    tick_ms: float = 0.0


class Aggregator:
    """Builds the overview each tick and samples the current activation's response curve."""

    def __init__(
        self,
        store: OpsStore,
        live: LiveState,
        hub: Broadcaster,
        fresh: Freshness,
        tick_s: float,
        alarm_share: float,
        reports: ReportSource | None = None,
    ) -> None:
        self.store = store
        self.live = live
        self.hub = hub
        self.fresh = fresh
        self.tick_s = tick_s
        self.alarm_share = alarm_share
        self.reports = reports

    async def load(self) -> None:
        """Fill the in-memory master-data cache from Redis at start."""
        sites = await self.store.sites()
        self.live.hp_power_kw.update({k: float(v["hp_electric_power_kw"]) for k, v in sites.items()})

    async def run(self) -> None:
        """Tick until cancelled; a failing tick is logged and the next one tried."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self.tick(utc_now())
            except Exception:
                LOGGER.exception("ops-room aggregation tick failed")
            self.live.tick_ms = (loop.time() - started) * 1000
            self.hub.wake.clear()
            with contextlib.suppress(TimeoutError):  # asyncio.timeout: wait_for can swallow a cancellation
                async with asyncio.timeout(max(0.05, self.tick_s - (loop.time() - started))):
                    await self.hub.wake.wait()

    async def tick(self, now: datetime) -> dict[str, Any]:
        """Summarise the fleet, the bids in force and the current activation; push the result."""
        fleet = await self.store.fleet()
        summary = summarise(fleet, self.live.hp_power_kw, await self.store.excluded(), now, self.fresh)
        up_mw, down_mw = committed_mw(await self.store.cleared(now - timedelta(hours=5), now), now)
        activation = await self.current_activation(now, summary.pool_power_kw)
        await self.evaluate_alarms(summary, activation, now)
        overview = {
            "at": now.isoformat(),
            "fleet": asdict(summary),
            "committed_up_mw": up_mw,
            "committed_down_mw": down_mw,
            "activation": activation,
            "alarms": await self.open_alarms(),
        }
        self.live.overview = overview
        self.hub.send("overview", overview)
        return overview

    async def current_activation(self, now: datetime, pool_kw: float) -> dict[str, Any] | None:
        """Return the running (or most recent) activation with its latest sample, sampling it if live."""
        recent = await self.store.activations(now - timedelta(hours=6), now + timedelta(minutes=15), limit=20)
        live = [a for a in recent if _t(a["start"]) <= now <= _t(a["end"]) + AFTER_END]
        chosen = live[0] if live else (recent[0] if recent else None)
        if chosen is None:
            return None
        start, end = _t(chosen["start"]), _t(chosen["end"])
        aid = chosen["activation_id"]
        curve = await self._curve(aid)
        source = "pool power vs baseline"
        if chosen in live:
            requested = chosen["power_mw"] * 1000 if now < end else 0.0
            measured = await self._dispatch_delivered(aid)
            if measured is None:
                baseline = await self.store.baseline(aid, pool_kw)
                measured = delivered_kw(chosen["direction"], baseline, pool_kw)
            else:
                source = "dispatch report"
            point = CurvePoint((now - start).total_seconds(), requested, measured)
            curve.append(point)
            await self.store.add_point(aid, point)
        requested_kw = chosen["power_mw"] * 1000
        elapsed = (min(now, end) - start).total_seconds()
        compliance = assess(
            [p for p in curve if p.requested_kw > 0], chosen["product"], requested_kw, elapsed
        )
        last = curve[-1] if curve else None
        return {
            **chosen,
            "live": chosen in live,
            "requested_kw": last.requested_kw if last else 0.0,
            "delivered_kw": last.delivered_kw if last else 0.0,
            "t_s": last.t_s if last else 0.0,
            "verdict": compliance.verdict.value,
            "measured_by": source,
            "t50_s": compliance.t50_s,
            "t100_s": compliance.t100_s,
            "at_risk": chosen in live
            and now < end
            and at_risk(compliance, elapsed, last.delivered_kw if last else 0.0, requested_kw),
        }

    async def _dispatch_delivered(self, activation_id: str) -> float | None:
        """Delivered power from dispatch's report: it knows which sites it moved (None: no report)."""
        if self.reports is None:
            return None
        report = await self.reports(activation_id)
        if not report or not report.get("curve"):
            return None
        return float(report["curve"][-1][1])

    async def _curve(self, activation_id: str) -> list[CurvePoint]:
        if activation_id not in self.live.curves:
            if len(self.live.curves) > 50:
                self.live.curves.clear()
            self.live.curves[activation_id] = await self.store.curve_points(activation_id)
        return self.live.curves[activation_id]

    async def evaluate_alarms(
        self, summary: FleetSummary, activation: dict[str, Any] | None, now: datetime
    ) -> None:
        """Raise or clear the alarms that follow from this tick's figures."""
        if summary.sites_total and summary.unhealthy_share > self.alarm_share:
            text = f"{summary.stale + summary.offline} of {summary.sites_total} sites report stale or no data"
            await self.store.raise_alarm("data-stale", "data_stale", text, now)
        else:
            await self.store.clear_alarm("data-stale", now)
        if activation is not None:
            alarm_id = f"activation-at-risk:{activation['activation_id']}"
            if activation["at_risk"]:
                text = (
                    f"activation {activation['activation_id']}: {activation['delivered_kw']:.0f} of "
                    f"{activation['requested_kw']:.0f} kW delivered after {activation['t_s']:.0f} s"
                )
                await self.store.raise_alarm(alarm_id, "activation_at_risk", text, now)
            elif activation["live"]:
                await self.store.clear_alarm(alarm_id, now)

    async def open_alarms(self) -> list[dict[str, Any]]:
        """Alarms still active or not yet acknowledged (at most 20)."""
        alarms = [
            a for a in await self.store.alarms() if a["cleared_at"] is None or a["acknowledged_at"] is None
        ]
        return alarms[:20]


def _t(value: str) -> datetime:
    return datetime.fromisoformat(value)
