"""Drives the fleet model in (simulated) time, publishes readings and answers commands."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from prometheus_client import Counter, Gauge, Histogram

from hybridpool_shared import topics
from hybridpool_shared.messages import CommandAcknowledged, SwitchHeatPump, TelemetryReported
from hybridpool_shared.messaging import Delivery
from hybridpool_shared.runtime import Service
from services.site_sim.adapters import ReadingProducer
from services.site_sim.clock import SimClock
from services.site_sim.domain.sim import FleetSim, to_dt
from services.site_sim.settings import SiteSimSettings

LOGGER = logging.getLogger(__name__)
RETRY_FIRST_S = 0.2
RETRY_MAX_S = 10.0


class SimRunner:
    """Owns the fleet model, its clock and the service it publishes through."""

    def __init__(self, service: Service, sim: FleetSim, clock: SimClock, settings: SiteSimSettings) -> None:
        self.service = service
        self.sim = sim
        self.clock = clock
        self.settings = settings
        reg = service.metrics.registry
        self.readings = Counter("site_sim_readings_total", "Readings published.", registry=reg)
        self.commands = Counter(
            "site_sim_commands_total", "Commands handled by outcome.", ["outcome"], registry=reg
        )
        self.step_seconds = Histogram("site_sim_step_seconds", "Wall time of one physics step.", registry=reg)
        self.behind = Gauge(
            "site_sim_behind_seconds", "Simulated seconds the model lags its clock.", registry=reg
        )
        self.sites = Gauge("site_sim_sites", "Simulated sites.", registry=reg)
        self.publish_failures = Counter(
            "site_sim_publish_failures", "Failed attempts to publish a step's readings.", registry=reg
        )
        self.sites.set(sim.p.n)

    async def run(self) -> None:
        """Step the physics in simulated time and publish due readings, until cancelled."""
        producer = ReadingProducer(self.settings.resolved_kafka_bootstrap(), self.settings.kafka_idempotence)
        await producer.start()
        try:
            await self._loop(producer)
        finally:
            await producer.stop()

    async def _loop(self, producer: ReadingProducer) -> None:
        interval = self.settings.telemetry_interval_s
        dt = min(self.settings.physics_step_s, interval / 10.0)  # small steps spread the reports out
        self.sim.schedule_reports(interval)
        while True:
            wait = self.clock.real_seconds_until(self.sim.t + dt)
            if wait > 0:
                await asyncio.sleep(wait)
            started = time.perf_counter()
            self.sim.step(dt)
            due = self.sim.due_reports(interval)
            self.step_seconds.observe(time.perf_counter() - started)
            self.behind.set(max(0.0, self.clock.now_s() - self.sim.t))
            await self._publish(producer, due)
            self.readings.inc(len(due))

    async def _publish(self, producer: ReadingProducer, due: Sequence[TelemetryReported]) -> None:
        """Send the step's readings, retrying with back-off until the broker has them all.

        The model waits meanwhile and catches up afterwards: readings come late, never lost, and a
        resent reading the broker already had is a duplicate the telemetry service ignores.
        """
        delay = RETRY_FIRST_S
        while True:
            try:
                await producer.send_all(due, self.settings.publish_chunk)
                return
            except Exception:
                self.publish_failures.inc()
                LOGGER.exception("publishing %d readings failed; retrying in %.1f s", len(due), delay)
                await asyncio.sleep(delay)
                delay = min(2 * delay, RETRY_MAX_S)

    async def on_command(self, cmd: SwitchHeatPump, _: Delivery) -> None:
        """Apply a command to its villa and acknowledge it (offline villas stay silent)."""
        now = self.clock.now_s()
        outcome = self.sim.handle_command(cmd, now)
        if outcome is None:
            self.commands.labels(outcome="offline").inc()
            return
        self.commands.labels(outcome="accepted" if outcome.accepted else "rejected").inc()
        ack = CommandAcknowledged(
            command_id=outcome.command_id,
            site_id=outcome.site_id,
            seq=outcome.seq,
            accepted=outcome.accepted,
            reason=outcome.reason[:200],
            acknowledged_at=to_dt(now),
        )
        await self.service.publish(topics.DISPATCH_ACKS, ack)
