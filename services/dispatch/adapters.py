"""Redis adapters: atomic switch claims (lock-out/min-run/ownership), the command log, profiles, reports."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, cast

import orjson
import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from hybridpool_shared.domain.reaction import (
    PROFILE_WINDOW,
    ActivationReport,
    ReactionProfile,
    ReactionRecord,
    build_profile,
    profile_key,
)
from hybridpool_shared.messages import BidCleared, BidSubmitted, SwitchHeatPump
from hybridpool_shared.topics import DISPATCH_COMMANDS

LOG_CHUNK = 500
HEADERS = [("content-type", b"application/json"), ("message-type", b"SwitchHeatPump")]

CLAIM_CHUNK = 2000  # units per script call: one round trip; Redis is busy some tens of milliseconds
# One script decides atomically whether a unit may be switched, and if so records the new state,
# the next sequence number and the earliest time the opposite switch is allowed. Two dispatch workers
# (or a redelivered activation) therefore never switch the same unit twice. A unit's record is one
# string (creating one key with one value is what costs Redis least); a record still in the former
# hash layout is read and honoured, and rewritten in the packed form by the unit's next command.
# `resend` puts the unit's latest command out again (same id and seq) if it is still the latest, was
# issued no later than the request's lease field says, and its lease runs: for a command whose
# publishing failed, or one this worker does not know was ever sent.
CLAIM_LUA = r"""
local now, action, owner = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local now_s = ARGV[1]
local out = {}
local k = 0
local unit = '([^,;]+),([^,;]+),([^,;]+),([^,;]+),([^,;]+)'
-- a unit's record, one string: seq|state|owner_until|stop_ok|start_ok|issued|cmd_until|rule|last_cmd|owner
-- (times in ms; fields are kept as the strings they were read as, numbers written as integers: ms
-- times have 13 digits, well inside the 14 Lua prints exactly; anything else fails the next read)
local packed = '^(%d+)|(%d)|(%d+)|(%d+)|(%d+)|(%d+)|(%d+)|(%a?)|([^|]*)|(.*)$'
for cid, lease_s, minrun_s, lockout_s, free_s in string.gmatch(ARGV[4], unit) do
  k = k + 1
  local key = KEYS[k]
  local seq, state, s_until, s_stop, s_start, s_issued, s_cmd_until, rule, last, cur =
    '0', '2', '0', '0', '0', '0', '0', '', '', ''
  local raw = redis.pcall('GET', key)
  if type(raw) == 'string' then
    seq, state, s_until, s_stop, s_start, s_issued, s_cmd_until, rule, last, cur = string.match(raw, packed)
    if not seq then return redis.error_reply('unreadable unit record ' .. key) end
  elseif type(raw) == 'table' then
    -- a record of the former layout (a hash of fields): honoured, rewritten in the packed form on change
    local o = redis.call('HMGET', key, 'seq', 'state', 'owner', 'owner_until', 'stop_ok_ms', 'start_ok_ms',
                         'last_cmd', 'changed_ms')
    seq, state, cur, s_until = o[1] or '0', o[2] or '2', o[3] or '', o[4] or '0'
    s_stop, s_start, last, s_issued, s_cmd_until = o[5] or '0', o[6] or '0', o[7] or '', o[8] or '0', s_until
  end
  local cur_until, stop_ok, start_ok = tonumber(s_until), tonumber(s_stop), tonumber(s_start)
  local foreign = cur ~= '' and cur ~= owner and cur ~= 'plan' and cur_until > now
  local status, reason, cmd = '-1', '', last
  if action == 'block' or action == 'force_on' then
    local want = (action == 'block') and '1' or '4'
    if cur == owner and state == want then
      status, reason = '0', 'duplicate'
    elseif foreign then
      reason = 'held by ' .. cur
    elseif action == 'block' and now < math.max(stop_ok, tonumber(free_s)) then
      reason = 'min run not over'
    elseif action == 'force_on' and now < math.max(start_ok, tonumber(free_s)) then
      reason = 'lock-out not over'
    else
      if action == 'block' then s_start, rule = now + tonumber(lockout_s), 'l'
      else s_stop, rule = now + tonumber(minrun_s), 'r' end
      seq, state, cur, last = seq + 1, want, owner, cid
      s_until, s_issued, s_cmd_until = lease_s, now_s, lease_s
      status, reason, cmd = '1', 'ok', cid
    end
  elseif action == 'release' then
    if cur ~= owner then
      status, reason = '0', 'not held'
    elseif state == '1' and now < start_ok then
      reason = 'lock-out not over'
    elseif state == '4' and now < stop_ok then
      reason = 'min run not over'
    else
      -- released from a block the HP may start (then it must run); from force-on it may stop (then rest)
      if state == '1' then s_stop, rule = now + tonumber(minrun_s), 'r'
      else s_start, rule = now + tonumber(lockout_s), 'l' end
      seq, state, cur, s_until, s_issued, s_cmd_until, last = seq + 1, '2', '', '0', now_s, lease_s, cid
      status, reason, cmd = '1', 'ok', cid
    end
  elseif action == 'renew' then
    if cur ~= owner then
      reason = 'not held'
    else
      seq, s_until, s_issued, s_cmd_until, last, rule = seq + 1, lease_s, now_s, lease_s, cid, ''
      status, reason, cmd = '1', 'ok', cid
    end
  elseif action == 'resend' then
    -- the unit's latest command goes out (again): its rule runs from now, the moment it can take effect
    if last ~= cid then
      reason = 'superseded'
    elseif tonumber(s_issued) > tonumber(lease_s) then
      reason = 'too recent'
    elseif now >= tonumber(s_cmd_until) then
      reason = 'lease over'
    else
      if rule == 'l' then s_start = math.max(start_ok, now + tonumber(lockout_s)) end
      if rule == 'r' then s_stop = math.max(stop_ok, now + tonumber(minrun_s)) end
      status, reason, cmd = '1', state .. ',' .. s_issued .. ',' .. s_cmd_until, cid
    end
  else
    reason = 'unknown action'
  end
  if status == '1' then
    redis.call('SET', key, seq .. '|' .. state .. '|' .. s_until .. '|' .. s_stop .. '|' .. s_start .. '|' ..
               s_issued .. '|' .. s_cmd_until .. '|' .. rule .. '|' .. last .. '|' .. cur)
  end
  out[k] = status .. '|' .. seq .. '|' .. cmd .. '|' .. reason
end
return table.concat(out, '\n')
"""


_SEPARATORS = re.compile(r"[,;|\n]")  # the claim script's field and record separators


class ClaimRequest(NamedTuple):
    """Ask to switch one unit: block / force_on / release / renew; or resend its latest command.

    For `resend`, lease_until_ms is the latest issue time of a command that may go out again. A tuple,
    not a dataclass: a burst makes 10,000 of them; SafetyStore.claim checks the command ids.
    """

    site_id: str
    action: str
    owner: str
    command_id: str
    lease_until_ms: int
    min_run_ms: int
    lockout_ms: int
    live_free_ms: int


class ClaimResult(NamedTuple):
    """1: granted (new seq), 0: already done (duplicate; no command), -1: refused with a reason."""

    status: int
    reason: str
    seq: int
    command_id: str


@dataclass(frozen=True)
class LatestCommand:
    """A unit's latest command, cleared to go out again: its seq, state and times as recorded."""

    site_id: str
    command_id: str
    seq: int
    state: int
    issued_ms: int
    valid_until_ms: int


UNIT_FIELDS = ("seq", "state", "owner_until", "stop_ok_ms", "start_ok_ms", "issued_ms", "cmd_until_ms")


def _check_command_ids(chunk: Sequence[ClaimRequest], units: str) -> None:
    """Refuse a chunk whose command ids are empty or hold the script's separators (one pass over all)."""
    n = len(chunk)
    if (
        units.count(",") == 4 * n
        and units.count(";") == n - 1
        and "|" not in units
        and "\n" not in units
        and not units.startswith(",")
        and ";," not in units
    ):
        return
    bad = next((r.command_id for r in chunk if not r.command_id or _SEPARATORS.search(r.command_id)), "")
    raise ValueError(f"command_id {bad!r} must be non-empty without , ; | or newlines")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class SafetyStore:
    """Central lock-out / min-run / ownership enforcement with one atomic Lua script per unit."""

    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self.script = redis.register_script(CLAIM_LUA)

    def unit_key(self, site_id: str) -> str:
        """Return the Redis key of a unit's switching record."""
        return f"{self.prefix}:unit:{site_id}"

    async def claim(self, requests: Sequence[ClaimRequest], now_ms: int) -> list[ClaimResult]:
        """Run the claim script over many units: one atomic call per chunk of one action and owner."""
        results: list[ClaimResult] = []
        start = 0
        while start < len(requests):
            first = (requests[start].site_id, requests[start].action, requests[start].owner)
            end = start
            while end < len(requests) and end - start < CLAIM_CHUNK:
                r = requests[end]
                if (r.action, r.owner) != first[1:]:
                    break
                end += 1
            chunk = requests[start:end]
            # integers only: the script stores these digits as they come and reads them back as such
            units = ";".join(
                f"{r.command_id},{int(r.lease_until_ms)},{int(r.min_run_ms)},{int(r.lockout_ms)},"
                f"{int(r.live_free_ms)}"
                for r in chunk
            )
            _check_command_ids(chunk, units)
            key_prefix = f"{self.prefix}:unit:"
            raw = await self.script(
                keys=[key_prefix + r.site_id for r in chunk], args=[int(now_ms), *first[1:], units]
            )
            for line in _text(raw).split("\n"):
                status, seq, cid, reason = line.split("|", 3)
                results.append(ClaimResult(int(status), reason, int(seq), cid))
            start = end
        return results

    async def resend(
        self, requests: Sequence[ClaimRequest], now_ms: int
    ) -> list[LatestCommand | ClaimResult]:
        """Clear each unit's latest command to go out again (its rule then runs from now); else why not."""
        out: list[LatestCommand | ClaimResult] = []
        for req, res in zip(requests, await self.claim(requests, now_ms), strict=True):
            if res.status != 1:
                out.append(res)
                continue
            state, issued_ms, until_ms = res.reason.split(",")
            out.append(
                LatestCommand(req.site_id, res.command_id, res.seq, int(state), int(issued_ms), int(until_ms))
            )
        return out

    async def record(self, site_id: str) -> dict[str, str]:
        """Return a unit's switching record (either layout) as named fields; empty if there is none."""
        key = self.unit_key(site_id)
        if _text(await self.redis.type(key)) == "hash":
            raw = await self.redis.hgetall(key)
            return {_text(k): _text(v) for k, v in raw.items()}
        packed = await self.redis.get(key)
        if packed is None:
            return {}
        *numbers, rule, last_cmd, owner = _text(packed).split("|", 9)
        return dict(zip(UNIT_FIELDS, numbers, strict=True)) | {
            "rule": rule,
            "last_cmd": last_cmd,
            "owner": owner,
        }


class CommandLog:
    """A Redis stream of every command sent and every acknowledgement, queryable by site/activation."""

    def __init__(self, redis: aioredis.Redis, prefix: str, max_len: int) -> None:
        self.redis = redis
        self.key = f"{prefix}:commands:log"
        self.max_len = max_len

    async def append(self, entries: Sequence[dict[str, Any]]) -> None:
        """Append entries (flat JSON-able dicts), LOG_CHUNK to a stream entry, in one round trip."""
        if not entries:
            return
        pipe = self.redis.pipeline(transaction=False)
        for start in range(0, len(entries), LOG_CHUNK):
            body = orjson.dumps(list(entries[start : start + LOG_CHUNK]), default=str)
            pipe.xadd(self.key, {"json": body}, maxlen=self.max_len, approximate=True)
        await pipe.execute()

    async def query(
        self, *, site_id: str = "", activation_id: str = "", limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Return the newest matching entries, oldest first."""
        out: list[dict[str, Any]] = []
        last = "+"
        while len(out) < limit:
            batch = await self.redis.xrevrange(self.key, max=last, count=500)
            if not batch:
                break
            for _entry_id, fields in batch:
                chunk = json.loads(cast(dict[bytes, bytes], fields)[b"json"])
                for e in reversed(chunk):
                    if (not site_id or e.get("site_id") == site_id) and (
                        not activation_id or e.get("activation_id") == activation_id
                    ):
                        out.append(e)
                if len(out) >= limit:
                    break
            last = "(" + _text(batch[-1][0])
        return out[:limit][::-1]


class CommandPublisher:
    """Publishes commands straight through an aiokafka producer, keyed by site.

    FastStream's per-message publish path costs milliseconds per call under load, far too slow to put
    10,000 commands on the wire within a second; the producer batches them per partition instead.
    """

    def __init__(self, bootstrap: str, *, idempotence: bool, client_id: str) -> None:
        self.bootstrap = bootstrap
        self.idempotence = idempotence
        self.client_id = client_id
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self._partition_of: dict[bytes, int] = {}
        self._partitioner = DefaultPartitioner()

    async def _started(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.bootstrap,
                    client_id=self.client_id,
                    acks="all",
                    enable_idempotence=self.idempotence,
                    linger_ms=5,
                    max_batch_size=256 * 1024,
                )
                await producer.start()
                self._producer = producer
            return self._producer

    async def start(self) -> None:
        """Connect now rather than on the first command."""
        await self._started()

    async def warm(self, keys: Iterable[bytes]) -> int:
        """Compute the partitions of sites not seen yet, ahead of a burst; return how many were new.

        The default partitioner's murmur2 is pure Python (~10 us a key): 0.1 s of CPU at 10,000 sites,
        better spent while no activation waits.
        """
        fresh = [k for k in keys if k not in self._partition_of]
        if not fresh:
            return 0
        producer = await self._started()
        partitions = sorted(await producer.partitions_for(DISPATCH_COMMANDS.name))
        for key in fresh:
            self._partition_of[key] = self._partitioner(key, partitions, partitions)
        return len(fresh)

    async def publish_many(
        self, messages: Sequence[SwitchHeatPump], on_confirmed: Callable[[SwitchHeatPump], None] | None = None
    ) -> None:
        """Send every command in per-partition batches and wait until the broker confirmed all of them.

        Each site's partition is the default partitioner's (murmur2 of the key), so commands published
        here and anywhere else stay in per-site order.
        """
        if not messages:
            return
        producer = await self._started()
        topic = DISPATCH_COMMANDS.name
        partitions = sorted(await producer.partitions_for(topic))
        by_partition: dict[int, list[tuple[bytes, SwitchHeatPump]]] = {}
        to_json = SwitchHeatPump.__pydantic_serializer__.to_json  # to_json_bytes' bytes, without its wrappers
        for m in messages:
            key = m.kafka_key()
            part = self._partition_of.get(key)
            if part is None:
                part = self._partition_of[key] = self._partitioner(key, partitions, partitions)
            by_partition.setdefault(part, []).append((key, m))
        sent: list[tuple[asyncio.Future[Any], list[SwitchHeatPump]]] = []
        error: Exception | None = None
        try:
            for part, items in by_partition.items():
                batch = producer.create_batch()
                members: list[SwitchHeatPump] = []
                for key, m in items:
                    value = to_json(m)
                    if batch.append(timestamp=None, key=key, value=value, headers=HEADERS) is None:
                        sent.append((await producer.send_batch(batch, topic, partition=part), members))
                        batch, members = producer.create_batch(), []
                        batch.append(timestamp=None, key=key, value=value, headers=HEADERS)
                    members.append(m)
                sent.append((await producer.send_batch(batch, topic, partition=part), members))
        except Exception as exc:  # the batches already handed over are still confirmed (or not) below
            error = exc
        for fut, members in sent:  # every batch's outcome counts: the caller re-sends only the failed ones
            try:
                await fut
            except Exception as exc:
                error = error or exc
                continue
            if on_confirmed is not None:
                for m in members:
                    on_confirmed(m)
        if error is not None:
            raise error

    async def stop(self) -> None:
        """Flush and close the producer."""
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None


class ProfileStore:
    """Each site's recent reactions and its rolling profile (`dispatch:reaction_profile:<site>`)."""

    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    def _history_key(self, site_id: str) -> str:
        return f"{self.prefix}:reactions:{site_id}"

    async def add(self, site_id: str, record: ReactionRecord, now: datetime) -> ReactionProfile:
        """Store a reaction and the site's recomputed profile together: both or neither, so a retry
        after a failure never counts the reaction twice."""
        key = self._history_key(site_id)
        earlier = await self.redis.lrange(key, 0, PROFILE_WINDOW - 2)
        records = [record, *(ReactionRecord(**json.loads(r)) for r in earlier)]
        profile = build_profile(site_id, records, now)
        pipe = self.redis.pipeline(transaction=True)
        pipe.lpush(key, json.dumps(record.__dict__))
        pipe.ltrim(key, 0, PROFILE_WINDOW - 1)
        pipe.hset(profile_key(site_id), mapping=cast(Any, profile.to_redis()))
        await pipe.execute()
        return profile

    async def get(self, site_id: str) -> ReactionProfile | None:
        """Return a site's profile, if any."""
        raw = await self.redis.hgetall(profile_key(site_id))
        return ReactionProfile.from_redis(cast(dict[bytes, bytes], raw)) if raw else None


class ReportStore:
    """Final activation reports, kept for export."""

    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    async def put(self, report: ActivationReport) -> None:
        """Store a report (30 days)."""
        key = f"{self.prefix}:activation:{report.activation_id}:report"
        await self.redis.set(key, report.model_dump_json(), ex=30 * 86400)

    async def get(self, activation_id: str) -> ActivationReport | None:
        """Return a stored report."""
        raw = await self.redis.get(f"{self.prefix}:activation:{activation_id}:report")
        return ActivationReport.model_validate_json(raw) if raw else None


HOLD_TTL_S = 3 * 86400  # a day-ahead bid's period ends within two days of its auction


class HoldStore:
    """Frequency-reserve bids and their acceptance, so an accepted one is followed even after a restart."""

    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    def _bid_key(self, bid_id: str) -> str:
        return f"{self.prefix}:hold:bid:{bid_id}"

    def _accepted_key(self, bid_id: str) -> str:
        return f"{self.prefix}:hold:accepted:{bid_id}"

    async def remember_bid(self, bid: BidSubmitted) -> None:
        """Keep a frequency-reserve bid until its acceptance is known."""
        await self.redis.set(self._bid_key(bid.bid_id), bid.to_json_bytes(), ex=HOLD_TTL_S)

    async def remember_acceptance(self, result: BidCleared) -> None:
        """Keep the accepted MW of a bid (results may arrive before the bid itself)."""
        await self.redis.set(self._accepted_key(result.bid_id), repr(result.accepted_mw), ex=HOLD_TTL_S)

    async def accepted(self, bid_id: str) -> tuple[BidSubmitted, float] | None:
        """Return the bid and its accepted MW once both are known."""
        bid, mw = await self.redis.mget(self._bid_key(bid_id), self._accepted_key(bid_id))
        if bid is None or mw is None:
            return None
        return BidSubmitted.from_json_bytes(bid), float(mw)

    async def accepted_bid_ids(self) -> list[str]:
        """Return every bid id with a known acceptance (to resume holds at start)."""
        marker = f"{self.prefix}:hold:accepted:"
        return [_text(k)[len(marker) :] async for k in self.redis.scan_iter(match=marker + "*", count=500)]
