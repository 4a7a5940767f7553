"""Redis adapters: atomic switch claims (lock-out/min-run/ownership), the command log, profiles, reports."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import redis.asyncio as aioredis

from hybridpool_shared.domain.reaction import (
    PROFILE_WINDOW,
    ActivationReport,
    ReactionProfile,
    ReactionRecord,
    build_profile,
    profile_key,
)

# One script decides atomically whether a unit may be switched, and if so records the new state,
# the next sequence number and the earliest time the opposite switch is allowed. Two dispatch workers
# (or a redelivered activation) therefore never switch the same unit twice.
CLAIM_LUA = """
local now = tonumber(ARGV[1])
local action = ARGV[2]
local owner = ARGV[3]
local lease = tonumber(ARGV[4])
local minrun = tonumber(ARGV[5])
local lockout = tonumber(ARGV[6])
local live_free = tonumber(ARGV[7])
local cid = ARGV[8]
local h = redis.call('HMGET', KEYS[1], 'seq', 'state', 'owner', 'owner_until', 'stop_ok_ms', 'start_ok_ms',
                     'last_cmd')
local seq = tonumber(h[1]) or 0
local state = h[2] or '2'
local cur = h[3] or ''
local cur_until = tonumber(h[4]) or 0
local stop_ok = tonumber(h[5]) or 0
local start_ok = tonumber(h[6]) or 0
local last = h[7] or ''
local foreign = cur ~= '' and cur ~= owner and cur ~= 'plan' and cur_until > now
if action == 'block' or action == 'force_on' then
  local want = (action == 'block') and '1' or '4'
  if cur == owner and state == want then return {0, 'duplicate', seq, last} end
  if foreign then return {-1, 'held by ' .. cur, seq, last} end
  if action == 'block' then
    if now < math.max(stop_ok, live_free) then return {-1, 'min run not over', seq, last} end
  else
    if now < math.max(start_ok, live_free) then return {-1, 'lock-out not over', seq, last} end
  end
  seq = seq + 1
  local fields = {'seq', seq, 'state', want, 'owner', owner, 'owner_until', lease, 'last_cmd', cid,
                  'changed_ms', now}
  if action == 'block' then
    table.insert(fields, 'start_ok_ms'); table.insert(fields, now + lockout)
  else
    table.insert(fields, 'stop_ok_ms'); table.insert(fields, now + minrun)
  end
  redis.call('HSET', KEYS[1], unpack(fields))
  return {1, 'ok', seq, cid}
elseif action == 'release' then
  if cur ~= owner then return {0, 'not held', seq, last} end
  if state == '1' and now < start_ok then return {-1, 'lock-out not over', seq, last} end
  if state == '4' and now < stop_ok then return {-1, 'min run not over', seq, last} end
  seq = seq + 1
  redis.call('HSET', KEYS[1], 'seq', seq, 'state', '2', 'owner', '', 'owner_until', 0, 'last_cmd', cid,
             'changed_ms', now)
  if state == '1' then redis.call('HSET', KEYS[1], 'stop_ok_ms', now + minrun) end
  if state == '4' then redis.call('HSET', KEYS[1], 'start_ok_ms', now + lockout) end
  return {1, 'ok', seq, cid}
elseif action == 'renew' then
  if cur ~= owner then return {-1, 'not held', seq, last} end
  seq = seq + 1
  redis.call('HSET', KEYS[1], 'seq', seq, 'owner_until', lease, 'last_cmd', cid)
  return {1, 'ok', seq, cid}
end
return {-1, 'unknown action', seq, last}
"""


@dataclass(frozen=True)
class ClaimRequest:
    """Ask to switch one unit: block / force_on / release / renew."""

    site_id: str
    action: str
    owner: str
    command_id: str
    lease_until_ms: int
    min_run_ms: int
    lockout_ms: int
    live_free_ms: int


@dataclass(frozen=True)
class ClaimResult:
    """1: granted (new seq), 0: already done (duplicate; no command), -1: refused with a reason."""

    status: int
    reason: str
    seq: int
    command_id: str


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
        """Run the claim script for many units in one pipelined round trip."""
        if not requests:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for r in requests:
            args: list[Any] = [now_ms, r.action, r.owner, r.lease_until_ms, r.min_run_ms, r.lockout_ms]
            args += [r.live_free_ms, r.command_id]
            await self.script(keys=[self.unit_key(r.site_id)], args=args, client=pipe)
        raw = await pipe.execute()
        return [ClaimResult(int(x[0]), _text(x[1]), int(x[2]), _text(x[3])) for x in raw]

    async def record(self, site_id: str) -> dict[str, str]:
        """Return a unit's switching record."""
        raw = await self.redis.hgetall(self.unit_key(site_id))
        return {_text(k): _text(v) for k, v in raw.items()}


class CommandLog:
    """A Redis stream of every command sent and every acknowledgement, queryable by site/activation."""

    def __init__(self, redis: aioredis.Redis, prefix: str, max_len: int) -> None:
        self.redis = redis
        self.key = f"{prefix}:commands:log"
        self.max_len = max_len

    async def append(self, entries: Sequence[dict[str, Any]]) -> None:
        """Append entries (each a flat JSON-able dict) in one round trip."""
        if not entries:
            return
        pipe = self.redis.pipeline(transaction=False)
        for e in entries:
            pipe.xadd(self.key, {"json": json.dumps(e, default=str)}, maxlen=self.max_len, approximate=True)
        await pipe.execute()

    async def query(
        self, *, site_id: str = "", activation_id: str = "", limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Return the newest matching entries, oldest first."""
        out: list[dict[str, Any]] = []
        last = "+"
        while len(out) < limit:
            batch = await self.redis.xrevrange(self.key, max=last, count=5000)
            if not batch:
                break
            for _entry_id, fields in batch:
                e = json.loads(cast(dict[bytes, bytes], fields)[b"json"])
                if (not site_id or e.get("site_id") == site_id) and (
                    not activation_id or e.get("activation_id") == activation_id
                ):
                    out.append(e)
                    if len(out) >= limit:
                        break
            last = "(" + _text(batch[-1][0])
        return out[::-1]


class ProfileStore:
    """Each site's recent reactions and its rolling profile (`dispatch:reaction_profile:<site>`)."""

    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    def _history_key(self, site_id: str) -> str:
        return f"{self.prefix}:reactions:{site_id}"

    async def add(self, site_id: str, record: ReactionRecord, now: datetime) -> ReactionProfile:
        """Store a reaction and recompute the site's profile."""
        key = self._history_key(site_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.lpush(key, json.dumps(record.__dict__))
        pipe.ltrim(key, 0, PROFILE_WINDOW - 1)
        pipe.lrange(key, 0, PROFILE_WINDOW - 1)
        *_, raw = await pipe.execute()
        records = [ReactionRecord(**json.loads(r)) for r in raw]
        profile = build_profile(site_id, records, now)
        await self.redis.hset(profile_key(site_id), mapping=cast(Any, profile.to_redis()))
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
