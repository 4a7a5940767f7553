"""Dispatch use cases: activations in, commands out, acks and telemetry folded into loops and reactions."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import itertools
import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Container, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis
from pydantic import TypeAdapter, ValidationError

from hybridpool_shared import topics
from hybridpool_shared.domain.market_rules import product_area
from hybridpool_shared.domain.reaction import (
    ActivationFacts,
    ActivationReport,
    ReactionPhases,
    activation_report,
)
from hybridpool_shared.messages import (
    BalancePriceComputed,
    BidCleared,
    BidSubmitted,
    CommandAcknowledged,
    Direction,
    FrequencyMeasured,
    Message,
    PoolActivated,
    ReactionMeasured,
    ReserveProduct,
    SgReadyState,
    SiteMasterDataChanged,
    SitePlanComputed,
    SitePoolMembershipChanged,
    SwitchHeatPump,
    TelemetryReported,
)
from hybridpool_shared.messages.dispatch import MAX_BLOCK
from hybridpool_shared.sitestate import STATE_INDEX_KEY, SiteLiveState, state_key
from hybridpool_shared.topics import TopicSpec
from services.dispatch.adapters import (
    CLAIM_CHUNK,
    ClaimRequest,
    ClaimResult,
    CommandLog,
    CommandPublisher,
    HoldStore,
    LatestCommand,
    ProfileStore,
    ReportStore,
    SafetyStore,
)
from services.dispatch.domain.clock import EventClock
from services.dispatch.domain.controller import Action, ActivationLoop, LoopConfig, Release, Resend, Switch
from services.dispatch.domain.fleet import Fleet, Unit
from services.dispatch.domain.plan import QUARTER_S, planned_state
from services.dispatch.domain.products import FREQUENCY_PRODUCTS, ActivationSpec
from services.dispatch.domain.tracking import ReactionTracker, Tracked
from services.dispatch.metrics import DispatchMetrics
from services.dispatch.settings import DispatchSettings

LOGGER = logging.getLogger(__name__)
Publish = Callable[[TopicSpec, Message], Awaitable[None]]
PLAN_OWNER = "plan"
RELEASE_LEASE_S = 3600.0
BLOCK_LEASE_MARGIN_S = 60.0
TRACKER_EVERY_S = 5.0
MAX_UNLOGGED = 500_000  # command-log entries held while Redis refuses them (~0.5 KB each)
PLAN_EVERY_S = 15.0
CAPACITY_EVERY_S = 5.0
ACTIVATION_PRODUCTS = {
    "fcr-n": ReserveProduct.FCR_N,
    "fcr_n": ReserveProduct.FCR_N,
    "fcr-d-up": ReserveProduct.FCR_D_UP,
    "fcr-d-down": ReserveProduct.FCR_D_DOWN,
    "mfrr": ReserveProduct.MFRR_ENERGY,
    "mfrr_energy": ReserveProduct.MFRR_ENERGY,
}


def _dt(at_s: float) -> datetime:
    return datetime.fromtimestamp(at_s, tz=UTC)


_SWITCHES = TypeAdapter(list[SwitchHeatPump])


def build_switches(fields: list[dict[str, Any]]) -> list[SwitchHeatPump]:
    """Validate a chunk's commands in one call (a quarter cheaper than one model at a time).

    If one is invalid, the others are still built and sent; the invalid one is logged and left out.
    """
    try:
        return _SWITCHES.validate_python(fields)
    except ValidationError:
        out = []
        for f in fields:
            try:
                out.append(SwitchHeatPump(**f))
            except ValidationError:
                LOGGER.exception("command %s to %s is invalid: not sent", f["command_id"], f["site_id"])
        return out


class CommandIds:
    """Fresh, globally unique command ids: random per worker, then a counter; tells its own from others'."""

    def __init__(self) -> None:
        self.prefix = "cmd-" + secrets.token_hex(8) + "-"
        self._counter = itertools.count()

    def new(self) -> str:
        """Return a fresh command id."""
        return f"{self.prefix}{next(self._counter):x}"

    def mine(self, command_id: str) -> bool:
        """Return True if this worker issued the command id."""
        return command_id.startswith(self.prefix)


@dataclass
class SentCommand:
    """A command kept for re-sending until acknowledged or its lease ends."""

    message: SwitchHeatPump
    owner: str
    acked: bool = False
    published: bool = False  # confirmed by the broker; until then each tick tries again


class Dispatcher:
    """All dispatch state of one worker; I/O through Redis stores and the publish function."""

    def __init__(
        self,
        settings: DispatchSettings,
        redis: aioredis.Redis,
        publish: Publish,
        metrics: DispatchMetrics,
        clock: Callable[[], float] = time.time,
        commands_out: CommandPublisher | None = None,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.publish = publish
        self.commands_out = commands_out
        self.metrics = metrics
        self.event_clock = EventClock(settings.speedup) if settings.clock == "telemetry" else None
        self.clock = self.event_clock.now if self.event_clock is not None else clock
        prefix = settings.key_prefix
        self.safety = SafetyStore(redis, prefix)
        self.log = CommandLog(redis, prefix, settings.log_max_len)
        self.unlogged: list[dict[str, Any]] = []  # log entries whose write failed: written next tick
        self.profiles = ProfileStore(redis, prefix)
        self.reports = ReportStore(redis, prefix)
        self.holds = HoldStore(redis, prefix)
        self.fleet = Fleet(settings.default_min_run_minutes * 60, settings.default_lockout_minutes * 60)
        self.loops: dict[str, ActivationLoop] = {}
        self.final: dict[str, ActivationReport] = {}
        self.frequency_hz: float | None = None  # the latest sample of any area
        self.frequency_by_area: dict[str, float] = {}
        self.tracker = ReactionTracker(
            timedelta(seconds=settings.reaction_give_up_s),
            timedelta(seconds=settings.reaction_stable_window_s),
        )
        self.sent: dict[str, SentCommand] = {}
        self.ids = CommandIds()
        self.plans: dict[str, SitePlanComputed] = {}
        self.plan_applied: dict[str, tuple[datetime, SgReadyState]] = {}
        self.plan_block_since: dict[str, float] = {}
        self.lock = asyncio.Lock()
        self._sem = asyncio.Semaphore(settings.publish_concurrency)
        self._last: dict[str, float] = {}

    def loop_config(self) -> LoopConfig:
        """Return the closed-loop configuration from settings."""
        s = self.settings
        return LoopConfig(
            ack_timeout_s=s.ack_timeout_s,
            max_resends=s.max_resends,
            first_change_deadline_up_s=s.first_change_deadline_up_s,
            first_change_deadline_down_s=s.first_change_deadline_down_s,
            settle_up_s=s.settle_up_s,
            settle_down_s=s.settle_down_s,
            margin=s.margin,
            spare_share=s.spare_share,
            release_stagger_slots=s.release_stagger_slots,
            release_stagger_step_s=s.release_stagger_step_s,
            lease_grace_s=s.lease_grace_s,
        )

    # --- inputs ------------------------------------------------------------------------------------

    async def load_live_state(self) -> int:
        """Seed the fleet from the telemetry service's live states in Redis; return how many."""
        members: set[Any] = await self.redis.smembers(STATE_INDEX_KEY)
        ids = [i.decode() if isinstance(i, bytes) else str(i) for i in members]
        pipe = self.redis.pipeline(transaction=False)
        for site in ids:
            pipe.hgetall(state_key(site))
        for raw in await pipe.execute():
            if raw and self.serves(SiteLiveState.from_redis(raw).site_id):
                self._apply_live(SiteLiveState.from_redis(raw))
        return len(ids)

    def _apply_live(self, st: SiteLiveState) -> None:
        self.fleet.observe(st.site_id, st.measured_at.timestamp(), st.electric_power_kw, st.hp_running)
        u = self.fleet.unit(st.site_id)
        if st.running_since is not None:
            u.running_since_s = st.running_since.timestamp()
        if st.stopped_since is not None:
            u.stopped_since_s = st.stopped_since.timestamp()

    async def on_activation(self, msg: PoolActivated, *, follow_frequency: bool | None = None) -> None:
        """Start serving an activation (idempotent per activation_id) and dispatch its first units at once."""
        if msg.activation_id in self.loops or msg.activation_id in self.final:
            return
        if await self.reports.get(msg.activation_id) is not None:
            return
        follow = msg.product in FREQUENCY_PRODUCTS if follow_frequency is None else follow_frequency
        spec = ActivationSpec(
            msg.activation_id,
            msg.product,
            msg.direction,
            msg.power_mw * 1000.0,
            msg.start.timestamp(),
            msg.end.timestamp(),
            follow_frequency=follow,
            area=msg.area or product_area(msg.product),
        )
        self.loops[msg.activation_id] = ActivationLoop(spec, self.loop_config())
        self.metrics.activations_active.set(len(self.loops))
        LOGGER.info(
            "activation %s: %s %s %.1f MW", msg.activation_id, msg.product, msg.direction, msg.power_mw
        )
        async with self.lock:
            await self._step_loop(self.loops[msg.activation_id], self.clock())

    async def on_bid(self, msg: BidSubmitted) -> None:
        """Remember a frequency-reserve bid: once accepted, holding it means following the frequency."""
        if msg.product in FREQUENCY_PRODUCTS:
            await self.holds.remember_bid(msg)
            await self._hold_if_accepted(msg.bid_id)

    async def on_result(self, msg: BidCleared) -> None:
        """An accepted frequency-reserve bid starts its hold (results may come before their bid)."""
        if msg.accepted and msg.accepted_mw > 0:
            await self.holds.remember_acceptance(msg)
            await self._hold_if_accepted(msg.bid_id)

    async def resume_holds(self) -> int:
        """At start: follow again every accepted bid whose period has not ended; return how many."""
        resumed = 0
        for bid_id in await self.holds.accepted_bid_ids():
            resumed += await self._hold_if_accepted(bid_id)
        return resumed

    async def _hold_if_accepted(self, bid_id: str) -> int:
        """No TSO message activates FCR: the provider follows its own frequency for the accepted MW."""
        found = await self.holds.accepted(bid_id)
        if found is None:
            return 0
        bid, accepted_mw = found
        if bid.interval_end.timestamp() <= self.clock():
            return 0
        for direction in hold_directions(bid.direction):
            digest = hashlib.sha256(bid_id.encode()).hexdigest()[:24]
            await self.on_activation(
                PoolActivated(
                    activation_id=f"hold-{direction.value}-{digest}",
                    bid_id=bid_id,
                    product=bid.product,
                    direction=direction,
                    power_mw=accepted_mw,
                    start=bid.interval_start,
                    end=bid.interval_end,
                    requested_at=_dt(self.clock()),
                    area=bid.area,
                ),
                follow_frequency=True,
            )
        return 1

    def _frequency_for(self, area: str | None) -> float | None:
        """DK1 (Continental) and DK2 (Nordic) are different grids: an area's loop follows its own."""
        return self.frequency_hz if area is None else self.frequency_by_area.get(area)

    def test_activation(
        self, product: str, direction: Direction, mw: float, duration_s: float
    ) -> PoolActivated:
        """Return a prequalification-style step activation starting now (not frequency-following)."""
        if product not in ACTIVATION_PRODUCTS:
            raise ValueError(f"unknown product {product!r}; use one of {sorted(ACTIVATION_PRODUCTS)}")
        now = self.clock()
        return PoolActivated(
            activation_id="test-" + uuid.uuid4().hex[:12],
            product=ACTIVATION_PRODUCTS[product],
            direction=direction,
            power_mw=mw,
            start=_dt(now),
            end=_dt(now + duration_s),
            requested_at=_dt(now),
        )

    def serves(self, site_id: str) -> bool:
        """Return True if this worker's pool includes the site."""
        return site_id.startswith(self.settings.site_prefix)

    def on_frequency(self, msg: FrequencyMeasured) -> None:
        """Remember the latest grid frequency per area (FCR targets follow their own area's)."""
        self.frequency_hz = msg.frequency_hz
        self.frequency_by_area[msg.area] = msg.frequency_hz

    def on_plan(self, msg: SitePlanComputed) -> None:
        """Keep a site's latest plan."""
        if self.serves(msg.site_id):
            self.plans[msg.site_id] = msg

    def on_master(self, msg: SiteMasterDataChanged) -> None:
        """Apply master data: rated power, min run, lock-out; forget deleted sites."""
        if not self.serves(msg.site_id):
            return
        if msg.deleted:
            self.fleet.remove(msg.site_id)
            return
        self.fleet.set_master(
            msg.site_id,
            msg.hp_electric_power_kw,
            msg.min_run_minutes,
            msg.lockout_minutes,
            msg.location.price_area,
        )

    def on_membership(self, msg: SitePoolMembershipChanged) -> None:
        """Keep excluded sites out of activations; plan following hands back any block it holds."""
        if self.serves(msg.site_id):
            self.fleet.set_in_pool(msg.site_id, msg.in_pool)

    def on_price(self, msg: BalancePriceComputed) -> None:
        """Apply a balance price if its interval is current (or the site has none yet)."""
        if not self.serves(msg.site_id):
            return
        now = _dt(self.clock())
        u = self.fleet.unit(msg.site_id)
        if msg.interval_start <= now < msg.interval_end or u.balance_price_eur_per_mwh is None:
            self.fleet.set_price(msg.site_id, msg.balance_price_eur_per_mwh)

    def on_telemetry(self, readings: Sequence[TelemetryReported]) -> None:
        """Fold readings into the fleet view and the open reaction measurements."""
        for r in sorted(readings, key=lambda r: r.measured_at):
            if not self.serves(r.site_id):
                continue
            if self.event_clock is not None:
                self.event_clock.observe(r.measured_at.timestamp())
            self.fleet.observe(r.site_id, r.measured_at.timestamp(), r.electric_power_kw, r.hp_running)
            self.tracker.on_reading(r.site_id, r.measured_at, r.electric_power_kw)

    async def on_acks(self, acks: Sequence[CommandAcknowledged]) -> None:
        """Record acknowledgements in loops, reactions, the log and the counters."""
        entries = []
        for ack in acks:
            sent = self.sent.get(ack.command_id)
            if sent is None or sent.acked:
                continue
            sent.acked = True
            self.metrics.commands.labels(event="acked" if ack.accepted else "rejected").inc()
            loop = self.loops.get(sent.owner)
            if loop is not None:
                loop.on_ack(
                    ack.site_id, ack.command_id, ack.accepted, ack.reason, ack.acknowledged_at.timestamp()
                )
            self.tracker.on_ack(ack.command_id, ack.acknowledged_at)
            entries.append(
                {
                    "event": "ack",
                    "command_id": ack.command_id,
                    "site_id": ack.site_id,
                    "seq": ack.seq,
                    "accepted": ack.accepted,
                    "reason": ack.reason,
                    "at": ack.acknowledged_at.isoformat(),
                    "activation_id": sent.owner,
                }
            )
        await self._log(entries)

    # --- the periodic loop ---------------------------------------------------------------------------

    async def tick(self) -> None:
        """One pass: every activation's loop, leases, reactions, the plan, capacity gauges."""
        now = self.clock()
        async with self.lock:
            await self._log([])
            await self._republish(now)
            for loop in list(self.loops.values()):
                await self._step_loop(loop, now)
            self._expire(now)
            if self._due("tracker", now, TRACKER_EVERY_S):
                await self._finish_reactions(now)
            if self.settings.follow_plan and self._due("plan", now, PLAN_EVERY_S):
                await self._follow_plan(now)
            if self._due("capacity", now, CAPACITY_EVERY_S):
                self._update_capacity(now)
                await self.warm_partitions()

    async def warm_partitions(self) -> int:
        """Work out the command partition of every site not yet seen, before an activation needs it."""
        if self.commands_out is None:
            return 0
        return await self.commands_out.warm(site.encode() for site in self.fleet.units)

    def _due(self, name: str, now: float, every: float) -> bool:
        if now - self._last.get(name, 0.0) >= every:
            self._last[name] = now
            return True
        return False

    async def _step_loop(self, loop: ActivationLoop, now: float) -> None:
        # The garbage collector is paused over a large pool's step: choosing and switching thousands of
        # units makes thousands of objects, which would trigger full collections over the whole fleet
        # in the one moment where latency counts.
        paused = gc.isenabled() and len(self.fleet.units) > CLAIM_CHUNK
        if paused:
            gc.disable()
        try:
            actions = loop.step(now, self.fleet.units, self._frequency_for(loop.spec.area))
            await self._execute(loop, actions, now)
        finally:
            if paused:
                gc.enable()
        spec = loop.spec
        if now >= spec.end_s and spec.activation_id not in self.final:
            report = self.report(spec.activation_id)
            if report is not None:
                await self.reports.put(report)  # kept as final only once stored: else the next tick retries
                self.final[spec.activation_id] = report
                LOGGER.info(
                    "activation %s %s: %s", spec.activation_id, report.verdict, "; ".join(report.reasons)
                )
        if loop.finished:
            del self.loops[spec.activation_id]
            self.metrics.activations_active.set(len(self.loops))

    async def _execute(self, loop: ActivationLoop, actions: Sequence[Action], now: float) -> None:
        switches = [a for a in actions if isinstance(a, Switch)]
        releases = [a for a in actions if isinstance(a, Release)]
        for a in actions:
            if isinstance(a, Resend):
                await self._resend(loop, a, now)
        await self._switch(loop, switches, now)
        await self._release(loop, releases, now)

    def _lease_until(self, loop: ActivationLoop, unit: Unit, state: SgReadyState, now: float) -> float:
        hold = unit.lockout_s if state is SgReadyState.BLOCK else unit.min_run_s
        until = max(loop.spec.end_s, now + hold) + loop.config.lease_grace_s
        until += loop.config.release_stagger_slots * loop.config.release_stagger_step_s
        if state is SgReadyState.BLOCK:
            until = min(until, now + MAX_BLOCK.total_seconds() - BLOCK_LEASE_MARGIN_S)
        return until

    async def _switch(self, loop: ActivationLoop, switches: Sequence[Switch], now: float) -> None:
        """Claim and publish in chunks: every chunk's claim is queued on Redis at once, so Redis checks
        the next chunks while this process builds and publishes the commands of the first. The command
        log of the burst is written once all of it is on the wire.
        """
        owner = loop.spec.activation_id
        chunks = [switches[i : i + CLAIM_CHUNK] for i in range(0, len(switches), CLAIM_CHUNK)]
        claims = []
        for chunk in chunks:
            requests, leases = self._switch_requests(loop, chunk, now)
            task = asyncio.create_task(self.safety.claim(requests, int(now * 1000)))
            claims.append((chunk, requests, leases, task))
            await asyncio.sleep(0)  # let the claim go out: Redis works while the next chunk is prepared
        sending: list[asyncio.Task[list[SwitchHeatPump]]] = []
        unknown: list[tuple[str, str]] = []
        try:
            for chunk, requests, leases, task in claims:
                try:
                    results = await task
                except Exception:  # applied or not, unknown: the next claim of these units will tell
                    LOGGER.exception("activation %s: claiming %d units failed", owner, len(chunk))
                    continue
                out = self._switch_commands(loop, chunk, requests, leases, results, now, unknown)
                sending.append(asyncio.create_task(self._publish_commands(out, owner)))
        finally:
            # claims already queued take effect in Redis whatever happens here: never leave them dangling
            await asyncio.gather(*(task for *_, task in claims), return_exceptions=True)
            published = await asyncio.gather(*sending)
            await self._log_sent([m for batch in published for m in batch])
        await self._recover(unknown, owner, f"{loop.spec.product.value} {loop.spec.direction.value}", now)

    def _switch_requests(
        self, loop: ActivationLoop, switches: Sequence[Switch], now: float
    ) -> tuple[list[ClaimRequest], list[float]]:
        """Return the claim (fresh command id, lease, rules) of each switch, and its lease end."""
        owner = loop.spec.activation_id
        unit = self.fleet.unit
        requests, leases = [], []
        lease_of: dict[tuple[SgReadyState, float, float], float] = {}  # units share a few rule sets
        for sw in switches:
            u = unit(sw.site_id)
            rules = (sw.state, u.lockout_s, u.min_run_s)
            lease = lease_of.get(rules)
            if lease is None:
                lease = lease_of[rules] = self._lease_until(loop, u, sw.state, now)
            leases.append(lease)
            requests.append(
                ClaimRequest(
                    sw.site_id,
                    "block" if sw.state is SgReadyState.BLOCK else "force_on",
                    owner,
                    self.ids.new(),
                    int(lease * 1000),
                    int(u.min_run_s * 1000),
                    int(u.lockout_s * 1000),
                    int(u.free_from_s() * 1000),
                )
            )
        return requests, leases

    def _switch_commands(
        self,
        loop: ActivationLoop,
        switches: Sequence[Switch],
        requests: Sequence[ClaimRequest],
        leases: Sequence[float],
        results: Sequence[ClaimResult],
        now: float,
        unknown: list[tuple[str, str]],
    ) -> list[SwitchHeatPump]:
        """Turn granted claims into commands (refusals are recorded, not sent).

        A duplicate whose command this worker does not hold goes to `unknown` (site, command id): its
        claim may have outlived a failure before the command went out.
        """
        owner = loop.spec.activation_id
        issued = _dt(now)
        reason = f"{loop.spec.product.value} {loop.spec.direction.value}"
        until: dict[float, datetime] = {}  # most leases of a burst end at the same instant
        unit = self.fleet.unit
        fields: list[dict[str, Any]] = []
        for sw, req, res, lease in zip(switches, requests, results, leases, strict=True):
            u = unit(sw.site_id)
            if res.status < 0:
                loop.on_refused(sw.site_id, res.reason, now)
                self.metrics.commands.labels(event="refused").inc()
                continue
            loop.on_sent(sw, res.command_id, now, u.power_kw)
            if res.status == 0:  # another worker, an earlier delivery or a failed burst claimed it
                if res.command_id not in self.sent:
                    unknown.append((sw.site_id, res.command_id))
                continue
            valid_until = until.get(lease)
            if valid_until is None:
                valid_until = until[lease] = _dt(lease)
            fields.append(
                {
                    "command_id": req.command_id,
                    "site_id": sw.site_id,
                    "seq": res.seq,
                    "sg_ready_state": sw.state,
                    "issued_at": issued,
                    "valid_until": valid_until,
                    "activation_id": owner,
                    "reason": f"{reason} replacing {sw.replaces}" if sw.replaces else reason,
                }
            )
            expected = -u.power_kw if sw.state is SgReadyState.BLOCK else sw.expected_kw
            self.tracker.start(
                Tracked(
                    req.command_id,
                    sw.site_id,
                    owner,
                    issued,
                    u.power_kw,
                    expected,
                    tuple(u.recent_power_kw),
                )
            )
        return build_switches(fields)

    async def _release(self, loop: ActivationLoop, releases: Sequence[Release], now: float) -> None:
        if not releases:
            return
        owner = loop.spec.activation_id
        requests = []
        for rel in releases:
            u = self.fleet.unit(rel.site_id)
            requests.append(
                ClaimRequest(
                    rel.site_id,
                    "release",
                    owner,
                    self.ids.new(),
                    int((now + RELEASE_LEASE_S) * 1000),
                    int(u.min_run_s * 1000),
                    int(u.lockout_s * 1000),
                    0,
                )
            )
        results = await self.safety.claim(requests, int(now * 1000))
        out = []
        for rel, req, res in zip(releases, requests, results, strict=True):
            if res.status < 0:
                continue  # not yet allowed: the loop asks again next tick
            loop.on_released(rel.site_id, now)
            if res.status == 0:
                continue
            out.append(
                SwitchHeatPump(
                    command_id=req.command_id,
                    site_id=rel.site_id,
                    seq=res.seq,
                    sg_ready_state=SgReadyState.NORMAL,
                    issued_at=_dt(now),
                    valid_until=_dt(now + RELEASE_LEASE_S),
                    activation_id=owner,
                    reason="release after activation",
                )
            )
        await self._publish_commands(out, owner, log=True)

    async def _resend(self, loop: ActivationLoop, action: Resend, now: float) -> None:
        sent = self.sent.get(action.command_id)
        loop.on_resent(action.site_id, now)
        if sent is None and self.ids.mine(action.command_id):  # claimed here, its command never built
            reason = f"{loop.spec.product.value} {loop.spec.direction.value}"
            await self._recover([(action.site_id, action.command_id)], loop.spec.activation_id, reason, now)
            return
        if sent is None or sent.acked or sent.message.valid_until.timestamp() <= now:
            return
        if not sent.published:
            return  # never on the wire: _republish puts it out, with its rule running from then
        if await self._put_out([sent.message]):
            self.metrics.commands.labels(event="resent").inc()
            await self._log(_log_entries("resent", [sent.message], now))

    async def _publish_one(self, msg: SwitchHeatPump) -> None:
        async with self._sem:
            await self.publish(topics.DISPATCH_COMMANDS, msg)

    async def _put_out(self, msgs: Sequence[SwitchHeatPump]) -> list[SwitchHeatPump]:
        """Publish registered commands; mark and return those the broker confirmed (failures are logged).

        A command not confirmed stays registered as unpublished: the next tick's _republish puts it
        out again, so a unit whose claim succeeded is never left without its command.
        """
        if not msgs:
            return []
        confirmed: list[SwitchHeatPump] = []
        if self.commands_out is not None:
            try:
                await self.commands_out.publish_many(msgs, confirmed.append)
            except Exception:
                LOGGER.exception("publishing commands: %d of %d confirmed", len(confirmed), len(msgs))
        else:
            outcomes = await asyncio.gather(*(self._publish_one(m) for m in msgs), return_exceptions=True)
            confirmed = [m for m, o in zip(msgs, outcomes, strict=True) if not isinstance(o, BaseException)]
            if len(confirmed) < len(msgs):
                error = next(o for o in outcomes if isinstance(o, BaseException))
                LOGGER.error(
                    "publishing commands: %d of %d failed: %r", len(msgs) - len(confirmed), len(msgs), error
                )
        for m in confirmed:
            entry = self.sent.get(m.command_id)
            if entry is not None:
                entry.published = True
        return confirmed

    async def _publish_commands(
        self, msgs: Sequence[SwitchHeatPump], owner: str, *, log: bool = False
    ) -> list[SwitchHeatPump]:
        """Register and publish new commands (keyed by site); count, log if asked, return the confirmed."""
        if not msgs:
            return []
        for m in msgs:
            self.sent[m.command_id] = SentCommand(m, owner)
        confirmed = await self._put_out(msgs)
        self.metrics.commands.labels(event="sent").inc(len(confirmed))
        if log:
            await self._log_sent(confirmed)
        return confirmed

    async def _log(self, entries: list[dict[str, Any]]) -> None:
        """Append to the command log; entries a failed write left over go first.

        A failure is logged and the entries are kept for the next tick: the log is the record of
        what was sent and acknowledged, and losing it must neither stop control nor lose entries.
        """
        pending = self.unlogged + entries
        if not pending:
            return
        try:
            await self.log.append(pending)
        except Exception:
            if len(pending) > MAX_UNLOGGED:
                LOGGER.error(
                    "command log unavailable: dropping %d oldest entries", len(pending) - MAX_UNLOGGED
                )
                self.metrics.log_dropped.inc(len(pending) - MAX_UNLOGGED)
                pending = pending[-MAX_UNLOGGED:]
            self.unlogged = pending
            LOGGER.exception("writing %d command-log entries failed; retrying next tick", len(pending))
        else:
            self.unlogged = []

    async def _log_sent(self, msgs: Sequence[SwitchHeatPump]) -> None:
        if msgs:
            await self._log(_log_entries("sent", msgs, self.clock(), self.tracker.by_command))

    def _resend_request(self, site_id: str, command_id: str, issued_by_s: float) -> ClaimRequest:
        """Ask Redis to clear a unit's latest command, if issued by then, for going out again."""
        u = self.fleet.unit(site_id)
        return ClaimRequest(
            site_id,
            "resend",
            "",
            command_id,
            int(issued_by_s * 1000),
            int(u.min_run_s * 1000),
            int(u.lockout_s * 1000),
            0,
        )

    async def _republish(self, now: float) -> None:
        """Put out each command the broker never confirmed, while it is still its unit's latest.

        Redis checks that no later command superseded it and restarts its rule (lock-out or min run)
        from now, when it can first take effect; a superseded or expired command is dropped, never sent.
        """
        pending = [
            s for s in self.sent.values() if not s.published and s.message.valid_until.timestamp() > now
        ]
        if not pending:
            return
        requests = [self._resend_request(s.message.site_id, s.message.command_id, now) for s in pending]
        ready = []
        for s, res in zip(pending, await self.safety.resend(requests, int(now * 1000)), strict=True):
            if isinstance(res, LatestCommand):
                ready.append(s)
            else:
                LOGGER.warning(
                    "command %s to %s not re-published: %s",
                    s.message.command_id,
                    s.message.site_id,
                    res.reason,
                )
                self.sent.pop(s.message.command_id, None)
        confirmed = await self._put_out([s.message for s in ready])
        for s in ready:
            loop = self.loops.get(s.owner)
            if s.published and loop is not None:
                loop.on_published(s.message.site_id, s.message.command_id, now)
        self.metrics.commands.labels(event="sent").inc(len(confirmed))
        await self._log_sent(confirmed)

    async def _recover(self, unknown: Sequence[tuple[str, str]], owner: str, reason: str, now: float) -> None:
        """Put out again the latest command of units `owner` holds but this worker has no record of sending.

        A claim that outlived a failure before its command went out (or a worker's restart) leaves the
        unit claimed: the owner's next claim is a duplicate, and the command the unit's record holds
        goes out again (same id and seq: idempotent at the site) instead of nothing.
        """
        if not unknown:
            return
        # Another worker's command may be on its way right now: it is re-sent only once that worker
        # has had an ack timeout to publish it. A command this process issued and does not hold in
        # memory was lost here (a failure mid-burst) and goes out at once.
        foreign_by = now - self.settings.ack_timeout_s
        requests = [
            self._resend_request(site, cid, now if self.ids.mine(cid) else foreign_by)
            for site, cid in unknown
        ]
        msgs = []
        for res in await self.safety.resend(requests, int(now * 1000)):
            if not isinstance(res, LatestCommand):
                continue
            try:
                msgs.append(
                    SwitchHeatPump(
                        command_id=res.command_id,
                        site_id=res.site_id,
                        seq=res.seq,
                        sg_ready_state=SgReadyState(res.state),
                        issued_at=_dt(res.issued_ms / 1000),
                        valid_until=_dt(res.valid_until_ms / 1000),
                        activation_id="" if owner == PLAN_OWNER else owner,
                        reason=f"{reason} (re-sent)",
                    )
                )
            except ValueError:
                LOGGER.exception(
                    "unit %s: its latest command %s cannot be rebuilt", res.site_id, res.command_id
                )
        for m in msgs:
            self.sent[m.command_id] = SentCommand(m, owner)
        confirmed = await self._put_out(msgs)
        self.metrics.commands.labels(event="resent").inc(len(confirmed))
        await self._log(_log_entries("resent", confirmed, now))

    def _expire(self, now: float) -> None:
        """Forget commands whose lease ended; count those never acknowledged as expired."""
        for cid, sent in list(self.sent.items()):
            if sent.message.valid_until.timestamp() <= now:
                if not sent.acked:
                    self.metrics.commands.labels(event="expired").inc()
                del self.sent[cid]

    async def _finish_reactions(self, now: float) -> None:
        """Publish the measurements that closed; those not reported are kept for the next pass."""
        closed = self.tracker.finished(_dt(now))
        for i, (t, phases) in enumerate(closed):
            try:
                msg = _reaction_message(t, phases)
            except ValueError:  # a bug, not an outage: retrying would block every later reaction
                LOGGER.exception("reaction to command %s cannot be reported", t.command_id)
                continue
            try:
                await self._report_reaction(t, phases, msg, now)
            except BaseException:
                self.tracker.unreport(closed[i:])  # at least once: this one may be published again
                raise

    async def _report_reaction(
        self, t: Tracked, phases: ReactionPhases, msg: ReactionMeasured, now: float
    ) -> None:
        """Publish a closed measurement, observe its phase times and add it to the site's profile."""
        rec = t.record(phases)
        await self.publish(topics.DISPATCH_REACTIONS, msg)
        await self.profiles.add(t.site_id, rec, _dt(now))
        for phase, secs in (
            ("ack", rec.ack_s),
            ("first_change", rec.first_change_s),
            ("reached_50", rec.reached_50_s),
            ("reached_90", rec.reached_90_s),
            ("stable", rec.stable_s),
        ):
            if secs is not None:
                self.metrics.reaction_seconds.labels(phase=phase).observe(secs)

    async def _follow_plan(self, now: float) -> None:
        """Between activations, put each planned site into its quarter's state (rules permitting).

        A gas period longer than a quarter renews the block's lease each quarter (a new command, the
        next seq); a block is never held beyond 2 h: then the site is handed back (its next block waits
        for the minimum run the restart starts).
        """
        held = {
            s for loop in self.loops.values() for s, a in loop.assignments.items() if a.released_s is None
        }
        wanted: list[tuple[str, datetime, SgReadyState, str, SgReadyState]] = []  # (…, action, planned)
        for site, plan in self.plans.items():
            ps = planned_state(plan, _dt(now))
            if ps is None or site in held:
                continue
            quarter, state = ps
            if not self.fleet.unit(site).in_pool:  # excluded: hand back any block, then leave it alone
                if site in self.plan_block_since:
                    wanted.append((site, quarter, SgReadyState.NORMAL, "release", SgReadyState.NORMAL))
                continue
            if self.plan_applied.get(site) == ps:
                continue
            since = self.plan_block_since.get(site)
            if state is SgReadyState.NORMAL:
                if since is not None:
                    wanted.append((site, quarter, state, "release", state))
            elif since is None:
                wanted.append((site, quarter, state, "block", state))
            elif now + QUARTER_S - since < MAX_BLOCK.total_seconds() - BLOCK_LEASE_MARGIN_S:
                wanted.append((site, quarter, state, "renew", state))
            else:  # the 2 h limit: hand back for the rest of this quarter
                wanted.append((site, quarter, SgReadyState.NORMAL, "release", state))
        if not wanted:
            return
        requests = [
            self._plan_request(site, quarter, state, action, now)
            for site, quarter, state, action, _ in wanted
        ]
        results = await self.safety.claim(requests, int(now * 1000))
        out = []
        unknown: list[tuple[str, str]] = []
        for (site, quarter, state, action, planned), req, res in zip(wanted, requests, results, strict=True):
            if res.status < 0:
                if action == "renew":
                    self.plan_block_since.pop(site, None)  # someone else took the unit: block afresh
                continue
            self.plan_applied[site] = (quarter, planned)
            if action == "block":
                self.plan_block_since[site] = now
            elif action == "release":
                self.plan_block_since.pop(site, None)
            if res.status == 0:
                if action == "block" and res.command_id not in self.sent:
                    unknown.append((site, res.command_id))
                continue
            out.append(
                SwitchHeatPump(
                    command_id=req.command_id,
                    site_id=site,
                    seq=res.seq,
                    sg_ready_state=state,
                    issued_at=_dt(now),
                    valid_until=_dt(req.lease_until_ms / 1000),
                    activation_id="",
                    reason=f"plan {self.plans[site].plan_id}"
                    + (" (2 h block limit)" if state != planned else ""),
                )
            )
        await self._publish_commands(out, PLAN_OWNER, log=True)
        await self._recover(unknown, PLAN_OWNER, "plan", now)

    def _plan_request(
        self, site: str, quarter: datetime, state: SgReadyState, action: str, now: float
    ) -> ClaimRequest:
        u = self.fleet.unit(site)
        if state is SgReadyState.BLOCK:
            since = self.plan_block_since.get(site, now)
            lease = quarter.timestamp() + QUARTER_S + self.settings.lease_grace_s + u.lockout_s
            lease = min(lease, since + MAX_BLOCK.total_seconds() - BLOCK_LEASE_MARGIN_S)
        else:
            lease = now + RELEASE_LEASE_S
        return ClaimRequest(
            site,
            action,
            PLAN_OWNER,
            self.ids.new(),
            int(lease * 1000),
            int(u.min_run_s * 1000),
            int(u.lockout_s * 1000),
            int(u.free_from_s() * 1000) if action == "block" else 0,
        )

    def capacity_kw(self, now: float) -> dict[str, float]:
        """Return the up and down capacity that could be switched now (kW)."""
        held = {
            s for loop in self.loops.values() for s, a in loop.assignments.items() if a.released_s is None
        }
        up = down = 0.0
        for u in self.fleet.units.values():
            if u.site_id in held or not u.in_pool or not u.online(now):
                continue
            if u.can_stop(now):
                up += u.power_kw
            elif u.can_start(now):
                down += u.expected_on_kw()
        return {"up": up, "down": down}

    def _update_capacity(self, now: float) -> None:
        for direction, kw in self.capacity_kw(now).items():
            self.metrics.capacity_kw.labels(direction=direction).set(kw)

    # --- reports -------------------------------------------------------------------------------------

    def report(self, activation_id: str) -> ActivationReport | None:
        """Return the activation's report: final if it ended, else so far."""
        if activation_id in self.final:
            return self.final[activation_id]
        loop = self.loops.get(activation_id)
        if loop is None:
            return None
        s = loop.spec
        dispatched, replaced, unresponsive = loop.counts()
        facts = ActivationFacts(
            s.activation_id,
            s.product.value,
            s.direction.value,
            s.requested_kw,
            _dt(s.start_s),
            _dt(s.end_s),
            dispatched,
            replaced,
            unresponsive,
            loop.shortfall_reason,
        )
        return activation_report(facts, loop.curve)

    def status(self) -> list[dict[str, Any]]:
        """Return a summary of activations being served or finished."""
        out = []
        now = self.clock()
        for aid, loop in self.loops.items():
            s = loop.spec
            out.append(
                {
                    "activation_id": aid,
                    "state": "scheduled" if now < s.start_s else "active",
                    "product": s.product.value,
                    "direction": s.direction.value,
                    "area": s.area,
                    "start": _dt(s.start_s).isoformat(),
                    "end": _dt(s.end_s).isoformat(),
                }
            )
        for aid, rep in self.final.items():
            if aid not in self.loops:
                out.append({"activation_id": aid, "state": "finished", "verdict": rep.verdict})
        return out


def hold_directions(direction: Direction) -> tuple[Direction, ...]:
    """A symmetric bid holds both ways (two loops, each following its side of the band)."""
    return (Direction.UP, Direction.DOWN) if direction is Direction.SYMMETRIC else (direction,)


def _reaction_message(t: Tracked, phases: ReactionPhases) -> ReactionMeasured:
    """Return the event of a closed measurement."""
    return ReactionMeasured(
        command_id=t.command_id,
        site_id=t.site_id,
        activation_id=t.activation_id,
        sent_at=t.sent_at,
        acknowledged_at=t.acknowledged_at,
        first_change_at=phases.first_change_at,
        reached_50_at=phases.reached_50_at,
        reached_90_at=phases.reached_90_at,
        stable_at=phases.stable_at,
        expected_change_kw=t.expected_change_kw,
        observed_change_kw=phases.observed_change_kw,
        responded=phases.responded,
    )


def _log_entries(
    event: str, msgs: Sequence[SwitchHeatPump], now: float, measuring: Container[str] = ()
) -> list[dict[str, Any]]:
    """Return command-log entries (timestamps formatted once per distinct value: batches share them).

    `measured` says whether a reaction will be published for the command: a switch whose expected
    change is below what telemetry can tell apart, and every release, is not measured.
    """
    iso: dict[datetime, str] = {}

    def fmt(at: datetime) -> str:
        text = iso.get(at)
        if text is None:
            text = iso[at] = at.isoformat()
        return text

    at = _dt(now).isoformat()
    return [
        {
            "event": event,
            "command_id": m.command_id,
            "site_id": m.site_id,
            "seq": m.seq,
            "sg_ready_state": int(m.sg_ready_state),
            "issued_at": fmt(m.issued_at),
            "valid_until": fmt(m.valid_until),
            "activation_id": m.activation_id or PLAN_OWNER,
            "reason": m.reason,
            "at": at,
            "measured": m.command_id in measuring,
        }
        for m in msgs
    ]
