"""Claims whose commands never went out, on the real Redis: a publishing failure mid-burst, a worker
lost after claiming, and unit records still in the former layout. No unit is stranded and no rule broken."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from hybridpool_shared.messages import (
    Direction,
    Message,
    PoolActivated,
    ReserveProduct,
    SwitchHeatPump,
)
from hybridpool_shared.topics import TopicSpec
from services.dispatch import adapters, dispatcher
from services.dispatch.adapters import ClaimRequest, LatestCommand, SafetyStore
from services.dispatch.dispatcher import Dispatcher
from services.dispatch.metrics import DispatchMetrics
from services.dispatch.settings import DispatchSettings
from tests.infra import Infra, ManualClock, unique

pytestmark = pytest.mark.integration
MIN_MS = 60_000
LOCKOUT_S = 15 * 60.0
UNITS = 200


class _FlakySink:
    """Records published commands; the publishes numbered in `failing` raise (the broker hiccups)."""

    def __init__(self, failing: range = range(0)) -> None:
        self.failing = failing
        self.calls = 0
        self.commands: list[SwitchHeatPump] = []

    async def __call__(self, spec: TopicSpec, message: Message) -> None:
        if not isinstance(message, SwitchHeatPump):
            return
        call, self.calls = self.calls, self.calls + 1
        if call in self.failing:
            raise ConnectionError("broker unavailable")
        self.commands.append(message)


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Claims in chunks of 10: a burst of ~160 units is many chunks, as 10,000 units are at 2,000."""
    monkeypatch.setattr(adapters, "CLAIM_CHUNK", 10)
    monkeypatch.setattr(dispatcher, "CLAIM_CHUNK", 10)


def _worker(
    infra: Infra, redis: aioredis.Redis, prefix: str, clock: ManualClock, sink: _FlakySink
) -> Dispatcher:
    settings = DispatchSettings(kafka_bootstrap="unused:1", redis_url=infra.redis_url, key_prefix=prefix)
    d = Dispatcher(settings, redis, sink, DispatchMetrics(CollectorRegistry()), clock=clock)
    for i in range(UNITS):
        site = f"{prefix}-v{i:03d}"
        d.fleet.observe(site, clock.at - 5, 2.0, True)
        d.fleet.unit(site).running_since_s = clock.at - 3600
    return d


def _activation(now: float) -> PoolActivated:
    start = datetime.fromtimestamp(now, tz=UTC)
    return PoolActivated(
        activation_id=unique("act"),
        product=ReserveProduct.MFRR_ENERGY,
        direction=Direction.UP,
        power_mw=0.3,
        start=start,
        end=start + timedelta(minutes=15),
        requested_at=start,
    )


async def _claimed(store: SafetyStore, prefix: str, owner: str) -> dict[str, dict[str, str]]:
    """Return the Redis record of every unit the owner holds."""
    records = {f"{prefix}-v{i:03d}": await store.record(f"{prefix}-v{i:03d}") for i in range(UNITS)}
    return {site: rec for site, rec in records.items() if rec.get("owner") == owner}


async def test_units_stranded_by_a_publishing_failure_mid_burst_get_their_command_next_tick(
    infra: Infra, redis: aioredis.Redis, small_chunks: None
) -> None:
    prefix = unique("rc")
    clock = ManualClock(datetime.now(tz=UTC).timestamp())
    sink = _FlakySink(failing=range(40, 80))
    d = _worker(infra, redis, prefix, clock, sink)
    act = _activation(clock.at)
    t0 = clock.at
    await d.on_activation(act)

    claimed = await _claimed(d.safety, prefix, act.activation_id)
    assert len(claimed) >= 150  # 300 kW from 2 kW units
    stranded = set(claimed) - {c.site_id for c in sink.commands}
    assert len(stranded) == 40  # claimed in Redis, no command on the wire

    clock.at = t0 + 1.0
    await d.tick()

    by_site: dict[str, list[SwitchHeatPump]] = {}
    for c in sink.commands:
        by_site.setdefault(c.site_id, []).append(c)
    assert set(by_site) == set(claimed)  # every claimed unit has its command now
    for site, rec in (await _claimed(d.safety, prefix, act.activation_id)).items():
        (cmd,) = by_site[site]  # exactly one: the same command the claim recorded, not a second switch
        assert (cmd.command_id, cmd.seq, cmd.sg_ready_state) == (rec["last_cmd"], int(rec["seq"]), 1)
        assert cmd.valid_until - cmd.issued_at <= timedelta(hours=2)
        lockout_ends_s = int(rec["start_ok_ms"]) / 1000
        # the lock-out runs from when the command could first take effect, never from before
        assert lockout_ends_s >= (clock.at if site in stranded else t0) + LOCKOUT_S - 0.001
    log = await d.log.query(activation_id=act.activation_id, limit=10_000)
    assert sorted(e["site_id"] for e in log if e["event"] == "sent") == sorted(claimed)

    # another activation may not force a stranded unit on before its lock-out, counted from the re-send
    other = unique("act")
    site = sorted(stranded)[0]
    early = ClaimRequest(site, "force_on", other, unique("c"), 10**13, 15 * MIN_MS, 15 * MIN_MS, 0)
    (r,) = await d.safety.claim([early], int((t0 + LOCKOUT_S + 0.5) * 1000))
    assert r.status == -1


async def test_a_lost_workers_claims_are_resent_by_the_next_one_and_fresh_foreign_claims_are_not(
    infra: Infra, redis: aioredis.Redis, small_chunks: None
) -> None:
    prefix = unique("rc")
    clock = ManualClock(datetime.now(tz=UTC).timestamp())
    act = _activation(clock.at)
    lost = _worker(infra, redis, prefix, clock, _FlakySink(failing=range(10**6)))  # broker gone, then crash
    await lost.on_activation(act)
    claimed = await _claimed(lost.safety, prefix, act.activation_id)
    assert len(claimed) >= 150

    busy_sink = _FlakySink()
    busy = _worker(infra, redis, prefix, clock, busy_sink)  # the activation's redelivery, at once
    await busy.on_activation(act)
    assert busy_sink.commands == []  # the first worker may still be publishing these: not re-sent yet

    clock.at += 30.0  # after an ack timeout
    sink = _FlakySink()
    heir = _worker(infra, redis, prefix, clock, sink)
    await heir.on_activation(act)
    assert {c.site_id for c in sink.commands} == set(claimed)
    for c in sink.commands:
        rec = claimed[c.site_id]
        assert (c.command_id, c.seq, int(c.sg_ready_state)) == (rec["last_cmd"], int(rec["seq"]), 1)
        assert c.valid_until == datetime.fromtimestamp(int(rec["cmd_until_ms"]) / 1000, tz=UTC)


async def test_resend_goes_out_only_for_the_latest_command_within_its_lease(redis: aioredis.Redis) -> None:
    store = SafetyStore(redis, unique("t"))
    site = unique("s")
    t0 = 1_000 * MIN_MS

    def req(action: str, cid: str, lease_ms: int, owner: str = "a1") -> ClaimRequest:
        return ClaimRequest(site, action, owner, cid, lease_ms, 15 * MIN_MS, 15 * MIN_MS, 0)

    (granted,) = await store.claim([req("block", "c1", t0 + 30 * MIN_MS)], t0)
    assert granted.status == 1
    (early,) = await store.resend([req("resend", "c1", t0 - 1)], t0 + 1000)
    assert isinstance(early, adapters.ClaimResult)
    assert early.reason == "too recent"
    (again,) = await store.resend([req("resend", "c1", t0 + 1000)], t0 + 1000)
    assert again == LatestCommand(site, "c1", 1, 1, t0, t0 + 30 * MIN_MS)
    assert int((await store.record(site))["start_ok_ms"]) == t0 + 1000 + 15 * MIN_MS
    (late,) = await store.resend([req("resend", "c1", t0 + 30 * MIN_MS)], t0 + 30 * MIN_MS)
    assert isinstance(late, adapters.ClaimResult)
    assert late.reason == "lease over"
    (released,) = await store.claim([req("release", "c2", t0 + 90 * MIN_MS)], t0 + 20 * MIN_MS)
    assert released.status == 1
    (stale,) = await store.resend([req("resend", "c1", t0 + 21 * MIN_MS)], t0 + 21 * MIN_MS)
    assert isinstance(stale, adapters.ClaimResult)
    assert stale.reason == "superseded"


async def test_a_record_in_the_former_hash_layout_is_honoured_and_rewritten(redis: aioredis.Redis) -> None:
    store = SafetyStore(redis, unique("t"))
    t0 = 1_000 * MIN_MS
    blocked, running = unique("s"), unique("s")
    old_block = {
        "seq": 7,
        "state": "1",
        "owner": "a1",
        "owner_until": t0 + 20 * MIN_MS,
        "stop_ok_ms": 0,
        "start_ok_ms": t0 + 15 * MIN_MS,
        "last_cmd": "old-1",
        "changed_ms": t0,
    }
    await redis.hset(store.unit_key(blocked), mapping=old_block)  # type: ignore[arg-type]
    old_on = old_block | {"state": "4", "owner": "", "owner_until": 0, "stop_ok_ms": t0 + 15 * MIN_MS}
    old_on |= {"start_ok_ms": 0, "last_cmd": "old-2"}
    await redis.hset(store.unit_key(running), mapping=old_on)  # type: ignore[arg-type]

    def req(site: str, action: str, owner: str, cid: str) -> ClaimRequest:
        return ClaimRequest(site, action, owner, cid, t0 + 60 * MIN_MS, 15 * MIN_MS, 15 * MIN_MS, 0)

    at5 = t0 + 5 * MIN_MS
    (dup,) = await store.claim([req(blocked, "block", "a1", "new-0")], at5)
    assert (dup.status, dup.seq, dup.command_id) == (0, 7, "old-1")
    (held,) = await store.claim([req(blocked, "force_on", "a2", "new-1")], at5)
    assert (held.status, held.reason) == (-1, "held by a1")
    (rest,) = await store.claim([req(blocked, "release", "a1", "new-2")], at5)
    assert (rest.status, rest.reason) == (-1, "lock-out not over")
    (run,) = await store.claim([req(running, "block", "a3", "new-3")], at5)
    assert (run.status, run.reason) == (-1, "min run not over")

    at16 = t0 + 16 * MIN_MS
    (ok,) = await store.claim([req(blocked, "release", "a1", "new-4")], at16)
    assert (ok.status, ok.seq) == (1, 8)
    (stop,) = await store.claim([req(running, "block", "a3", "new-5")], at16)
    assert (stop.status, stop.seq) == (1, 8)
    assert await redis.type(store.unit_key(blocked)) == b"string"  # rewritten in the packed layout
    rec = await store.record(blocked)
    assert (rec["state"], rec["owner"], rec["last_cmd"], rec["stop_ok_ms"]) == (
        "2",
        "",
        "new-4",
        str(at16 + 15 * MIN_MS),
    )
    (again,) = await store.claim([req(running, "release", "a3", "new-6")], at16 + MIN_MS)
    assert (again.status, again.reason) == (-1, "lock-out not over")  # the packed record keeps the rule


async def test_units_whose_commands_were_never_built_get_them_from_their_record(
    infra: Infra, redis: aioredis.Redis, small_chunks: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = unique("rc")
    clock = ManualClock(datetime.now(tz=UTC).timestamp())
    sink = _FlakySink()
    d = _worker(infra, redis, prefix, clock, sink)
    chunks = 0
    build = dispatcher.build_switches

    def flaky_build(fields: list[dict[str, object]]) -> list[SwitchHeatPump]:
        nonlocal chunks
        chunks += 1
        if chunks == 5:  # a bug strikes: this chunk's commands and all later chunks' are never built
            raise RuntimeError("bug while building commands")
        return build(fields)  # type: ignore[arg-type]

    monkeypatch.setattr(dispatcher, "build_switches", flaky_build)
    act = _activation(clock.at)
    with pytest.raises(RuntimeError):
        await d.on_activation(act)
    claimed = await _claimed(d.safety, prefix, act.activation_id)
    assert len({c.site_id for c in sink.commands}) == 40  # the four chunks before the failing one
    assert len(claimed) >= 150

    for offset_s in (1.0, 12.0):  # a later claim of a unit (duplicate), then the ack timeout's re-send
        clock.at += offset_s
        await d.tick()
    by_site: dict[str, list[SwitchHeatPump]] = {}
    for c in sink.commands:
        by_site.setdefault(c.site_id, []).append(c)
    held = await _claimed(d.safety, prefix, act.activation_id)
    assert set(held) >= set(claimed)
    for site, rec in held.items():
        (cmd,) = {(c.command_id, c.seq) for c in by_site[site]}  # one command, however often it went out
        assert cmd == (rec["last_cmd"], int(rec["seq"]))
