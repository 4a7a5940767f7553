"""Dispatcher flows on the real Redis with a controlled clock: the day-ahead plan between activations
(with lock-out honoured on the way back), and FCR-N following the grid frequency."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from hybridpool_shared.domain.reaction import ReactionProfile, ReactionRecord
from hybridpool_shared.messages import (
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
    SitePlanComputed,
    SitePoolMembershipChanged,
    SwitchHeatPump,
)
from hybridpool_shared.timeutil import floor_quarter
from hybridpool_shared.topics import TopicSpec
from services.dispatch.adapters import ClaimRequest, ClaimResult
from services.dispatch.dispatcher import Dispatcher
from services.dispatch.metrics import DispatchMetrics
from services.dispatch.settings import DispatchSettings
from tests.infra import Infra, ManualClock, fail_once, unique

# Dispatch follows every activation on the topic and every site state in Redis: other tests' would interfere.
pytestmark = [pytest.mark.integration, pytest.mark.private_infra]


class _Sink:
    def __init__(self) -> None:
        self.commands: list[SwitchHeatPump] = []
        self.reactions: list[ReactionMeasured] = []

    async def __call__(self, spec: TopicSpec, message: Message) -> None:
        if isinstance(message, SwitchHeatPump):
            self.commands.append(message)
        elif isinstance(message, ReactionMeasured):
            self.reactions.append(message)


def _dispatcher(
    infra: Infra, redis: aioredis.Redis, clock: ManualClock, prefix: str | None = None
) -> tuple[Dispatcher, _Sink, str]:
    prefix = prefix or unique("fl")
    settings = DispatchSettings(kafka_bootstrap="unused:1", redis_url=infra.redis_url, key_prefix=prefix)
    sink = _Sink()
    return Dispatcher(settings, redis, sink, DispatchMetrics(CollectorRegistry()), clock=clock), sink, prefix


def _running(d: Dispatcher, prefix: str, clock: ManualClock, count: int, areas: tuple[str, ...] = ()) -> None:
    """count units of 2 kW running for an hour (past their minimum run); areas, if given, in turn."""
    for i in range(count):
        site = f"{prefix}-v{i}"
        if areas:
            d.fleet.set_master(site, 2.0, 15, 15, areas[i % len(areas)])
        d.fleet.observe(site, clock.at - 5, 2.0, True)
        d.fleet.unit(site).running_since_s = clock.at - 3600


def _fcr_n_up(now: datetime, mw: float) -> PoolActivated:
    return PoolActivated(
        activation_id=unique("fcr"),
        product=ReserveProduct.FCR_N,
        direction=Direction.UP,
        power_mw=mw,
        start=now,
        end=now + timedelta(hours=1),
        requested_at=now,
    )


async def test_plan_blocks_gas_quarters_and_hands_back_after_the_lockout(
    infra: Infra, redis: aioredis.Redis
) -> None:
    q0 = floor_quarter(datetime.now(tz=UTC)) + timedelta(hours=1)
    clock = ManualClock(q0.timestamp() + 600)  # the plan arrives 10 min into a gas quarter
    d, sink, prefix = _dispatcher(infra, redis, clock)
    site = f"{prefix}-v1"
    d.fleet.observe(site, clock.at - 10, 2.0, True)
    d.fleet.unit(site).running_since_s = clock.at - 3600
    plan = SitePlanComputed(
        plan_id="p1",
        site_id=site,
        first_quarter_start=q0,
        hp_on=(False, True, True),
        expected_hp_power_kw=(0.0, 2.0, 2.0),
    )
    d.on_plan(plan)
    await d.tick()
    assert [(c.site_id, c.sg_ready_state, c.reason) for c in sink.commands] == [
        (site, SgReadyState.BLOCK, "plan p1")
    ]
    d.fleet.observe(site, clock.at + 30, 0.0, False)
    for at in (q0.timestamp() + 905, q0.timestamp() + 1200):  # HP quarter, but the HP rests 15 min
        clock.at = at
        await d.tick()
    assert len(sink.commands) == 1
    clock.at = q0.timestamp() + 600 + 900 + 15
    await d.tick()
    assert [c.sg_ready_state for c in sink.commands] == [SgReadyState.BLOCK, SgReadyState.NORMAL]
    assert sink.commands[1].issued_at - sink.commands[0].issued_at >= timedelta(minutes=15)


async def test_an_excluded_site_is_handed_back_and_left_alone_until_included(
    infra: Infra, redis: aioredis.Redis
) -> None:
    q0 = floor_quarter(datetime.now(tz=UTC)) + timedelta(hours=1)
    clock = ManualClock(q0.timestamp() + 60)
    d, sink, prefix = _dispatcher(infra, redis, clock)
    site = f"{prefix}-v1"
    d.fleet.observe(site, clock.at - 10, 2.0, True)
    d.fleet.unit(site).running_since_s = clock.at - 3600
    gas = (False,) * 5
    d.on_plan(
        SitePlanComputed(
            plan_id="gas", site_id=site, first_quarter_start=q0, hp_on=gas, expected_hp_power_kw=(0.0,) * 5
        )
    )

    def membership(in_pool: bool) -> SitePoolMembershipChanged:
        return SitePoolMembershipChanged(
            site_id=site, in_pool=in_pool, changed_at=datetime.now(tz=UTC), changed_by="op-1"
        )

    async def tick_at(offset_s: float) -> list[SgReadyState]:
        clock.at = q0.timestamp() + offset_s
        await d.tick()
        return [c.sg_ready_state for c in sink.commands]

    assert await tick_at(60) == [SgReadyState.BLOCK]
    d.on_membership(membership(False))
    assert await tick_at(90) == [SgReadyState.BLOCK]  # the hand-back waits for the lock-out
    assert await tick_at(1805) == [SgReadyState.BLOCK, SgReadyState.NORMAL]
    assert sink.commands[1].issued_at - sink.commands[0].issued_at >= timedelta(minutes=15)
    assert await tick_at(2705) == [SgReadyState.BLOCK, SgReadyState.NORMAL]  # a gas quarter, left alone
    d.on_membership(membership(True))
    assert await tick_at(3605) == [SgReadyState.BLOCK, SgReadyState.NORMAL, SgReadyState.BLOCK]


async def test_fcr_n_follows_the_frequency(infra: Infra, redis: aioredis.Redis) -> None:
    now = datetime.now(tz=UTC)
    clock = ManualClock(now.timestamp())
    d, sink, prefix = _dispatcher(infra, redis, clock)
    _running(d, prefix, clock, 40)
    d.on_frequency(FrequencyMeasured(area="DK2", measured_at=now, frequency_hz=50.0))
    await d.on_activation(_fcr_n_up(now, 0.06))
    assert sink.commands == []  # 50.00 Hz: nothing to do
    d.on_frequency(FrequencyMeasured(area="DK2", measured_at=now, frequency_hz=49.95))
    clock.at += 1
    await d.tick()
    blocked = [c for c in sink.commands if c.sg_ready_state is SgReadyState.BLOCK]
    assert 15 <= len(blocked) <= 17  # half of 60 kW (+5 % margin) from 2 kW units
    d.on_frequency(FrequencyMeasured(area="DK2", measured_at=now, frequency_hz=49.80))
    clock.at += 1
    await d.tick()
    blocked = [c for c in sink.commands if c.sg_ready_state is SgReadyState.BLOCK]
    assert 31 <= len(blocked) <= 33  # full 60 kW


async def test_fcr_n_follows_dk2s_own_frequency_with_dk2s_units(infra: Infra, redis: aioredis.Redis) -> None:
    """DK1 (Continental) and DK2 (Nordic) are different grids and zones: DK2's FCR-N ignores DK1's dip."""
    now = datetime.now(tz=UTC)
    clock = ManualClock(now.timestamp())
    d, sink, prefix = _dispatcher(infra, redis, clock)
    _running(d, prefix, clock, 40, areas=("DK2", "DK1"))
    d.on_frequency(FrequencyMeasured(area="DK2", measured_at=now, frequency_hz=50.0))
    await d.on_activation(_fcr_n_up(now, 0.03))
    d.on_frequency(FrequencyMeasured(area="DK1", measured_at=now, frequency_hz=49.80))
    clock.at += 1
    await d.tick()
    assert sink.commands == []  # DK2 is still at 50.00 Hz
    d.on_frequency(FrequencyMeasured(area="DK2", measured_at=now, frequency_hz=49.80))
    clock.at += 1
    await d.tick()
    blocked = {c.site_id for c in sink.commands if c.sg_ready_state is SgReadyState.BLOCK}
    assert 15 <= len(blocked) <= 17  # the full 30 kW from 2 kW units
    assert all(d.fleet.unit(s).area == "DK2" for s in blocked)


async def test_plan_renews_a_long_block_but_never_beyond_two_hours(
    infra: Infra, redis: aioredis.Redis
) -> None:
    q0 = floor_quarter(datetime.now(tz=UTC)) + timedelta(hours=1)
    clock = ManualClock(q0.timestamp() + 1)
    d, sink, prefix = _dispatcher(infra, redis, clock)
    site = f"{prefix}-v1"
    d.fleet.observe(site, clock.at - 10, 2.0, True)
    d.fleet.unit(site).running_since_s = clock.at - 3600
    d.on_plan(
        SitePlanComputed(
            plan_id="gas",
            site_id=site,
            first_quarter_start=q0,
            hp_on=(False,) * 12,
            expected_hp_power_kw=(0.0,) * 12,
        )
    )
    for k in range(9):
        clock.at = q0.timestamp() + k * 900 + 1
        await d.tick()
    first = sink.commands[0]
    assert first.sg_ready_state is SgReadyState.BLOCK
    handed_back = [c for c in sink.commands if c.sg_ready_state is SgReadyState.NORMAL]
    assert handed_back
    blocks = [
        c for c in sink.commands if c.sg_ready_state is SgReadyState.BLOCK and c.seq < handed_back[0].seq
    ]
    assert len(blocks) >= 6  # renewed every quarter: a new command with the next seq
    assert [c.seq for c in sink.commands] == sorted({c.seq for c in sink.commands})
    assert all(c.valid_until <= first.issued_at + timedelta(hours=2) for c in blocks)
    assert handed_back[0].reason == "plan gas (2 h block limit)"
    assert handed_back[0].issued_at < first.issued_at + timedelta(hours=2)


async def test_an_accepted_fcr_n_bid_is_held_by_following_the_frequency_and_survives_a_restart(
    infra: Infra, redis: aioredis.Redis
) -> None:
    """No TSO message activates FCR: accepting the bid obliges the pool to follow DK2's frequency."""
    now = datetime.now(tz=UTC)
    clock = ManualClock(now.timestamp())
    d, sink, prefix = _dispatcher(infra, redis, clock)
    _running(d, prefix, clock, 60, areas=("DK2",))
    hour = floor_quarter(now)

    def bid(bid_id: str) -> BidSubmitted:
        return BidSubmitted(
            bid_id=bid_id,
            area="DK2",
            product=ReserveProduct.FCR_N,
            direction=Direction.SYMMETRIC,
            capacity_mw=0.1,
            price_eur_per_mw_per_h=5.0,
            interval_start=hour,
            interval_end=hour + timedelta(hours=1),
            interval_minutes=60,
            submitted_at=now,
        )

    def result(bid_id: str, accepted: bool) -> BidCleared:
        return BidCleared(
            bid_id=bid_id, accepted=accepted, accepted_mw=0.1 if accepted else 0.0, cleared_at=now
        )

    rejected, accepted = unique("bid-no"), unique("bid-yes")
    await d.on_bid(bid(rejected))
    await d.on_result(result(rejected, False))
    await d.on_result(result(accepted, True))  # the result may arrive before its bid
    assert d.loops == {}
    await d.on_bid(bid(accepted))
    assert sorted(loop.spec.direction for loop in d.loops.values()) == [Direction.DOWN, Direction.UP]
    assert {loop.spec.area for loop in d.loops.values()} == {"DK2"}
    assert {(a["state"], a["product"]) for a in d.status()} == {("active", "fcr_n")}

    d.on_frequency(FrequencyMeasured(area="DK2", measured_at=now, frequency_hz=49.80))
    clock.at += 1
    await d.tick()
    blocked = [c for c in sink.commands if c.sg_ready_state is SgReadyState.BLOCK]
    assert 50 <= len(blocked) <= 54  # the full 100 kW (+5 % margin) from 2 kW units

    restarted, _, _ = _dispatcher(infra, redis, clock, prefix)
    assert await restarted.resume_holds() == 1
    assert len(restarted.loops) == 2


async def test_a_block_of_a_unit_that_stopped_meanwhile_is_logged_as_not_measured(
    infra: Infra, redis: aioredis.Redis
) -> None:
    """A reading between a unit's pick and its claim can show it stopped on its own: nothing to measure."""
    d, sink, prefix, clock, now = _fcr_n_pool(infra, redis)
    claim = d.safety.claim
    stopped: list[str] = []

    async def claim_after_a_stop(requests: Sequence[ClaimRequest], now_ms: int) -> list[ClaimResult]:
        stopped.append(requests[0].site_id)
        d.fleet.observe(requests[0].site_id, clock.at, 0.05, False)
        return await claim(requests, now_ms)

    d.safety.claim = claim_after_a_stop  # type: ignore[method-assign]
    await d.on_activation(_fcr_n_up(now, 0.06))
    clock.at += 1
    await d.tick()
    d.safety.claim = claim  # type: ignore[method-assign]
    log = [e for e in await d.log.query(activation_id="") if e["site_id"].startswith(prefix)]
    sent = {e["site_id"]: e["measured"] for e in log if e["event"] == "sent"}
    assert len(sent) >= 31
    assert [s for s, measured in sent.items() if not measured] == stopped

    clock.at += d.settings.reaction_give_up_s  # the measurements close, whatever they saw
    await d.tick()
    assert {r.site_id for r in sink.reactions} == set(sent) - set(stopped)


async def test_reactions_whose_report_failed_are_reported_on_the_next_pass(
    infra: Infra, redis: aioredis.Redis
) -> None:
    """A broker refusing a reaction loses none: the closed measurements are published again next time."""
    d, sink, _, clock, now = _fcr_n_pool(infra, redis)
    await d.on_activation(_fcr_n_up(now, 0.06))
    clock.at += 1
    await d.tick()
    blocked = {c.command_id for c in sink.commands if c.sg_ready_state is SgReadyState.BLOCK}
    publish = d.publish
    reported = 0

    async def fail_the_fifth_reaction(spec: TopicSpec, message: Message) -> None:
        nonlocal reported
        if isinstance(message, ReactionMeasured):
            reported += 1
            if reported == 5:
                raise ConnectionError("broker unavailable")
        await publish(spec, message)

    d.publish = fail_the_fifth_reaction
    add = d.profiles.add
    added = 0

    async def fail_the_seventh_profile(
        site_id: str, record: ReactionRecord, now: datetime
    ) -> ReactionProfile:
        nonlocal added
        added += 1
        if added == 7:
            raise ConnectionError("redis unavailable")
        return await add(site_id, record, now)

    d.profiles.add = fail_the_seventh_profile  # type: ignore[method-assign]
    clock.at += d.settings.reaction_give_up_s  # the measurements close, whatever they saw
    with pytest.raises(ConnectionError, match="broker"):
        await d.tick()
    assert len(sink.reactions) == 4
    clock.at += 10
    with pytest.raises(ConnectionError, match="redis"):
        await d.tick()  # the 7th reaction is published, then its profile fails: published again
    clock.at += 10
    await d.tick()
    assert {r.command_id for r in sink.reactions} == blocked
    assert len(sink.reactions) == len(blocked) + 1
    for c in sink.commands:
        if c.command_id in blocked:
            profile = await d.profiles.get(c.site_id)
            assert profile is not None
            assert profile.samples == 1


async def test_a_final_report_whose_write_failed_is_written_on_the_next_tick(
    infra: Infra, redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    d, _, _, clock, now = _fcr_n_pool(infra, redis)
    activation = _fcr_n_up(now, 0.06)
    await d.on_activation(activation)
    monkeypatch.setattr(d.reports, "put", fail_once(d.reports.put, ConnectionError("redis unavailable")))
    clock.at = activation.end.timestamp() + 1
    with pytest.raises(ConnectionError):
        await d.tick()
    assert await d.reports.get(activation.activation_id) is None
    clock.at += 1
    await d.tick()
    stored = await d.reports.get(activation.activation_id)
    assert stored is not None
    assert stored.units_dispatched > 0


async def test_command_log_entries_whose_write_failed_are_written_on_the_next_tick(
    infra: Infra, redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Neither the switching nor the acks wait for the log: its entries are kept until Redis takes them."""
    d, sink, prefix, clock, now = _fcr_n_pool(infra, redis)
    append = d.log.append

    async def logged() -> list[tuple[str, str]]:
        await d.tick()
        clock.at += 1
        return sorted(
            (e["event"], e["command_id"]) for e in await d.log.query() if e["site_id"].startswith(prefix)
        )

    monkeypatch.setattr(d.log, "append", fail_once(append, ConnectionError("redis unavailable")))
    await d.on_activation(_fcr_n_up(now, 0.06))
    assert len(sink.commands) >= 31  # sent although their log entries were refused
    assert await d.log.query(activation_id=sink.commands[0].activation_id) == []
    sent = sorted(("sent", c.command_id) for c in sink.commands)
    assert await logged() == sent

    monkeypatch.setattr(d.log, "append", fail_once(append, ConnectionError("redis unavailable")))
    acks = [
        CommandAcknowledged(
            command_id=c.command_id,
            site_id=c.site_id,
            seq=c.seq,
            accepted=True,
            reason="",
            acknowledged_at=now + timedelta(seconds=2),
        )
        for c in sink.commands
    ]
    await d.on_acks(acks)
    await d.on_acks(acks)  # redelivered: already acknowledged, not logged twice
    assert await logged() == sorted(sent + [("ack", c.command_id) for c in sink.commands])


def _fcr_n_pool(infra: Infra, redis: aioredis.Redis) -> tuple[Dispatcher, _Sink, str, ManualClock, datetime]:
    """40 units running at 2 kW and DK2 at 49.80 Hz: a 60 kW FCR-N up activation blocks about 31."""
    now = datetime.now(tz=UTC)
    clock = ManualClock(now.timestamp())
    d, sink, prefix = _dispatcher(infra, redis, clock)
    _running(d, prefix, clock, 40)
    d.on_frequency(FrequencyMeasured(area="DK2", measured_at=now, frequency_hz=49.80))
    return d, sink, prefix, clock, now
