"""Redis storage of the ops room's read models, sessions, alarms and audit trail (keys under `opsroom:`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis

from hybridpool_shared.sitestate import STATE_INDEX_KEY, state_key
from services.opsroom.domain import (
    GENESIS_HASH,
    AuditDraft,
    AuditRecord,
    ClearedBid,
    CurvePoint,
    LiveSite,
    ReactionSample,
    chain_record,
)

P = "opsroom:"
CHUNK = 2000
REACTIONS_KEPT = 50  # per site: enough for a reaction profile, bounded for 10,000 sites
PLANS_KEPT = 3  # a plan of 10,000 sites × 100 quarters is a few MB: keep only the newest few
# One round trip per chunk instead of one command per site: redis-py's pipeline costs ~50 µs a command.
HGET_JSON_MANY = """
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('HGET', key, 'json') or ''
end
return out
"""
APPEND_AUDIT = """
local head = redis.call('GET', KEYS[2])
if head ~= ARGV[1] and not (head == false and ARGV[1] == '') then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3])
return 1
"""


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else value


class OpsStore:
    """All Redis access of the ops room."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._append = redis.register_script(APPEND_AUDIT)
        self._hget_many = redis.register_script(HGET_JSON_MANY)
        self._parsed: dict[bytes, LiveSite] = {}

    # --- sessions -------------------------------------------------------------------------------
    @staticmethod
    def _session_key(session_id: str) -> str:
        return P + "session:" + hashlib.sha256(session_id.encode()).hexdigest()

    async def put_session(self, session_id: str, data: dict[str, Any], ttl_s: int) -> None:
        """Store a login session (only the hash of its id is a key)."""
        await self.redis.set(self._session_key(session_id), json.dumps(data), ex=ttl_s)

    async def session(self, session_id: str) -> dict[str, Any] | None:
        """Return a session's data, or None when unknown or expired."""
        raw = await self.redis.get(self._session_key(session_id))
        return None if raw is None else dict(json.loads(raw))

    async def drop_session(self, session_id: str) -> None:
        """End a session."""
        await self.redis.delete(self._session_key(session_id))

    # --- fleet live state (written by telemetry) --------------------------------------------------
    async def fleet(self) -> list[LiveSite]:
        """Read every site's live state, pipelined in chunks, skipping unparsable entries."""
        ids = [_s(i) for i in await self.redis.smembers(STATE_INDEX_KEY)]
        parsed: dict[bytes, LiveSite] = {}
        out = []
        for lo in range(0, len(ids), CHUNK):
            for raw in await self._hget_many(keys=[state_key(i) for i in ids[lo : lo + CHUNK]]):
                # Most sites did not report since the last tick: reuse their parsed state.
                site = self._parsed.get(raw) or _live_or_none(raw or None)
                if site is not None:
                    parsed[raw] = site
                    out.append(site)
        self._parsed = parsed
        return out

    async def live(self, ids: list[str]) -> list[LiveSite | None]:
        """Read the live state of the given sites (None where absent)."""
        out: list[LiveSite | None] = []
        for lo in range(0, len(ids), CHUNK):
            raws = await self._hget_many(keys=[state_key(i) for i in ids[lo : lo + CHUNK]])
            out.extend(_live_or_none(r or None) for r in raws)
        return out

    async def live_raw(self, site_id: str) -> dict[str, Any] | None:
        """Return one site's full live state as JSON data."""
        raw = await self.redis.hget(state_key(site_id), "json")
        return None if raw is None else dict(json.loads(raw))

    # --- master data (from sites.registry) --------------------------------------------------------
    async def put_site(self, site_id: str, summary: dict[str, Any]) -> None:
        """Upsert a site's master-data summary."""
        await self.redis.hset(P + "sites", site_id, json.dumps(summary))

    async def drop_site(self, site_id: str) -> None:
        """Forget a site that left the registry."""
        await self.redis.hdel(P + "sites", site_id)

    async def sites(self) -> dict[str, dict[str, Any]]:
        """Return every known site's master-data summary."""
        raw = await self.redis.hgetall(P + "sites")
        return {_s(k): json.loads(v) for k, v in raw.items()}

    # --- exclusions -----------------------------------------------------------------------------
    async def set_excluded(self, site_id: str, excluded: bool) -> None:
        """Exclude a site from the pool or include it again."""
        if excluded:
            await self.redis.sadd(P + "excluded", site_id)
        else:
            await self.redis.srem(P + "excluded", site_id)

    async def excluded(self) -> set[str]:
        """Return the excluded site ids."""
        return {_s(i) for i in await self.redis.smembers(P + "excluded")}

    # --- balance prices ---------------------------------------------------------------------------
    async def put_balance(self, site_id: str, start: datetime, data: dict[str, Any]) -> None:
        """Keep a site's balance price for its latest interval (older intervals do not overwrite)."""
        raw = await self.redis.hget(P + "balance", site_id)
        if raw is not None and json.loads(raw)["start"] > start.isoformat():
            return
        await self.redis.hset(P + "balance", site_id, json.dumps(data))

    async def balances(self, ids: list[str] | None = None) -> dict[str, dict[str, Any]]:
        """Return the latest balance price of the given sites (all when None)."""
        if ids is None:
            raw = await self.redis.hgetall(P + "balance")
            return {_s(k): json.loads(v) for k, v in raw.items()}
        if not ids:
            return {}
        values = await self.redis.hmget(P + "balance", ids)
        return {i: json.loads(v) for i, v in zip(ids, values, strict=True) if v is not None}

    # --- prices -----------------------------------------------------------------------------------
    async def put_price(self, curve: str, start: datetime, value: float) -> None:
        """Upsert one interval of a price curve (curve = kind:area:product:direction)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.sadd(P + "prices", curve)
            pipe.zadd(P + "price:" + curve, {start.isoformat(): start.timestamp()})
            pipe.hset(P + "price:" + curve + ":v", start.isoformat(), value)
            await pipe.execute()

    async def curves(self) -> list[str]:
        """Return the names of every stored price curve."""
        return sorted(_s(c) for c in await self.redis.smembers(P + "prices"))

    async def curve(self, curve: str, lo: datetime, hi: datetime) -> list[tuple[str, float]]:
        """Return (start, price) of a curve between lo and hi."""
        starts = [
            _s(s)
            for s in await self.redis.zrangebyscore(P + "price:" + curve, lo.timestamp(), hi.timestamp())
        ]
        if not starts:
            return []
        values = await self.redis.hmget(P + "price:" + curve + ":v", list(starts))
        return [(s, float(v)) for s, v in zip(starts, values, strict=True) if v is not None]

    # --- the pool plan (from pool.plan, per site) ---------------------------------------------------
    async def put_plans(self, rows: list[tuple[str, str, datetime, dict[str, Any]]]) -> None:
        """Store site plans (plan_id, site_id, first quarter, data); upserts by plan and site."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for plan_id, site_id, first, data in rows:
                pipe.hset(P + "plan:" + plan_id, site_id, json.dumps(data))
                pipe.expire(P + "plan:" + plan_id, 3 * 86400)
                pipe.zadd(P + "plans", {plan_id: first.timestamp()})
            await pipe.execute()
        old = [_s(i) for i in await self.redis.zrange(P + "plans", 0, -PLANS_KEPT - 1)]
        if old:
            await self.redis.delete(*(P + "plan:" + i for i in old))
            await self.redis.zrem(P + "plans", *old)

    async def latest_plan(self) -> tuple[str, list[dict[str, Any]]] | None:
        """Return the newest plan's id and its site plans."""
        newest = await self.redis.zrevrange(P + "plans", 0, 0)
        if not newest:
            return None
        plan_id = _s(newest[0])
        return plan_id, [json.loads(v) for v in await self.redis.hvals(P + "plan:" + plan_id)]

    # --- bids and results -------------------------------------------------------------------------
    async def put_bid(self, bid_id: str, start: datetime, data: dict[str, Any]) -> None:
        """Store a submitted bid."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(P + "bids", bid_id, json.dumps(data))
            pipe.zadd(P + "bids:by_start", {bid_id: start.timestamp()})
            await pipe.execute()

    async def put_result(self, bid_id: str, data: dict[str, Any]) -> None:
        """Store a bid's clearing result."""
        await self.redis.hset(P + "results", bid_id, json.dumps(data))

    async def bids(self, lo: datetime, hi: datetime) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
        """Return bids starting in [lo, hi] with their results (None before clearing)."""
        ids = [
            _s(i) for i in await self.redis.zrangebyscore(P + "bids:by_start", lo.timestamp(), hi.timestamp())
        ]
        if not ids:
            return []
        bids = await self.redis.hmget(P + "bids", ids)
        results = await self.redis.hmget(P + "results", ids)
        return [
            (json.loads(b), None if r is None else json.loads(r))
            for b, r in zip(bids, results, strict=True)
            if b is not None
        ]

    async def cleared(self, lo: datetime, hi: datetime) -> list[ClearedBid]:
        """Return bids in [lo, hi] joined with their results."""
        return [joined(b, r) for b, r in await self.bids(lo, hi)]

    # --- activations ------------------------------------------------------------------------------
    async def put_activation(self, activation_id: str, start: datetime, data: dict[str, Any]) -> bool:
        """Store an activation; return True when it is new."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hsetnx(P + "activations", activation_id, json.dumps(data))
            pipe.zadd(P + "activations:by_start", {activation_id: start.timestamp()})
            created, _ = await pipe.execute()
        return bool(created)

    async def activation(self, activation_id: str) -> dict[str, Any] | None:
        """Return one activation."""
        raw = await self.redis.hget(P + "activations", activation_id)
        return None if raw is None else dict(json.loads(raw))

    async def activations(self, lo: datetime, hi: datetime, limit: int = 200) -> list[dict[str, Any]]:
        """Return activations starting in [lo, hi], newest first."""
        ids = await self.redis.zrevrangebyscore(
            P + "activations:by_start", hi.timestamp(), lo.timestamp(), start=0, num=limit
        )
        if not ids:
            return []
        raws = await self.redis.hmget(P + "activations", [_s(i) for i in ids])
        return [json.loads(r) for r in raws if r is not None]

    async def baseline(self, activation_id: str, pool_kw: float) -> float:
        """Fix the pool power an activation is measured against (the first value offered wins)."""
        key = P + "act:" + activation_id + ":baseline_kw"
        await self.redis.set(key, pool_kw, nx=True, ex=30 * 86400)
        raw = await self.redis.get(key)
        return float(raw) if raw is not None else pool_kw

    async def add_point(self, activation_id: str, point: CurvePoint) -> None:
        """Append one sample to an activation's response curve."""
        key = P + "act:" + activation_id + ":curve"
        await self.redis.rpush(key, json.dumps([point.t_s, point.requested_kw, point.delivered_kw]))
        await self.redis.expire(key, 30 * 86400)

    async def curve_points(self, activation_id: str) -> list[CurvePoint]:
        """Return an activation's response curve."""
        raws = await self.redis.lrange(P + "act:" + activation_id + ":curve", 0, -1)
        return [CurvePoint(*json.loads(r)) for r in raws]

    # --- reactions --------------------------------------------------------------------------------
    async def put_reaction(
        self, activation_id: str, site_id: str, command_id: str, sent_at: datetime, data: dict[str, Any]
    ) -> None:
        """Store one measured reaction under its activation and its site (idempotent by command).

        A site keeps its latest REACTIONS_KEPT reactions (a redelivered one is the same member).
        """
        doc = json.dumps(data, sort_keys=True)
        async with self.redis.pipeline(transaction=False) as pipe:
            if activation_id:
                key = P + "act:" + activation_id + ":reactions"
                pipe.hset(key, command_id, doc)
                pipe.expire(key, 30 * 86400)
            key = P + "site:" + site_id + ":reactions"
            pipe.zadd(key, {doc: sent_at.timestamp()})
            pipe.zremrangebyrank(key, 0, -REACTIONS_KEPT - 1)
            await pipe.execute()

    async def activation_reactions(self, activation_id: str) -> list[dict[str, Any]]:
        """Return every reaction recorded for an activation."""
        return [json.loads(v) for v in await self.redis.hvals(P + "act:" + activation_id + ":reactions")]

    async def reaction_samples(self, ids: list[str]) -> dict[str, list[ReactionSample]]:
        """Return each site's reaction samples."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for site_id in ids:
                pipe.zrange(P + "site:" + site_id + ":reactions", 0, -1)
            raws = await pipe.execute()
        out: dict[str, list[ReactionSample]] = {}
        for site_id, values in zip(ids, raws, strict=True):
            data = [json.loads(v) for v in values]
            out[site_id] = [ReactionSample(d.get("t50_s"), bool(d["responded"])) for d in data]
        return out

    # --- telemetry history ------------------------------------------------------------------------
    async def put_quarter(self, site_id: str, start: datetime, data: dict[str, Any], keep: int) -> None:
        """Keep a site's quarter aggregate (upsert by start), the latest `keep` only."""
        key = P + "site:" + site_id + ":quarters"
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zremrangebyscore(key, start.timestamp(), start.timestamp())
            pipe.zadd(key, {json.dumps(data, sort_keys=True): start.timestamp()})
            pipe.zremrangebyrank(key, 0, -keep - 1)
            await pipe.execute()

    async def quarters(self, site_id: str) -> list[dict[str, Any]]:
        """Return a site's kept quarter aggregates, oldest first."""
        return [
            json.loads(_s(r)) for r in await self.redis.zrange(P + "site:" + site_id + ":quarters", 0, -1)
        ]

    # --- alarms -----------------------------------------------------------------------------------
    async def raise_alarm(self, alarm_id: str, kind: str, message: str, now: datetime) -> bool:
        """Raise an alarm unless it is already active; return True when it is new."""
        raw = await self.redis.hget(P + "alarms", alarm_id)
        if raw is not None and json.loads(raw)["cleared_at"] is None:
            return False
        alarm = {
            "id": alarm_id,
            "kind": kind,
            "message": message,
            "raised_at": now.isoformat(),
            "cleared_at": None,
            "acknowledged_by": None,
            "acknowledged_at": None,
        }
        await self.redis.hset(P + "alarms", alarm_id, json.dumps(alarm))
        return True

    async def clear_alarm(self, alarm_id: str, now: datetime) -> bool:
        """Mark an active alarm as cleared (its condition ended); return True if it was active."""
        raw = await self.redis.hget(P + "alarms", alarm_id)
        if raw is None or json.loads(raw)["cleared_at"] is not None:
            return False
        await self.redis.hset(
            P + "alarms", alarm_id, json.dumps(json.loads(raw) | {"cleared_at": now.isoformat()})
        )
        return True

    async def acknowledge_alarm(self, alarm_id: str, who: str, now: datetime) -> dict[str, Any] | None:
        """Acknowledge an alarm; None when there is no such alarm."""
        raw = await self.redis.hget(P + "alarms", alarm_id)
        if raw is None:
            return None
        alarm = json.loads(raw) | {"acknowledged_by": who, "acknowledged_at": now.isoformat()}
        await self.redis.hset(P + "alarms", alarm_id, json.dumps(alarm))
        return dict(alarm)

    async def alarms(self) -> list[dict[str, Any]]:
        """Return every alarm, newest first."""
        alarms = [json.loads(v) for v in await self.redis.hvals(P + "alarms")]
        return sorted(alarms, key=lambda a: a["raised_at"], reverse=True)

    # --- audit ------------------------------------------------------------------------------------
    async def audit(self, draft: AuditDraft, now: datetime) -> AuditRecord:
        """Append an action to the hash-chained trail (optimistic: retried when another writer won)."""
        while True:
            head = await self.redis.get(P + "audit:head")
            seq, prev = (0, GENESIS_HASH) if head is None else _head(_s(head))
            record = chain_record(draft, seq, prev, now)
            expected = "" if head is None else _s(head)
            args = [expected, json.dumps(record.to_dict()), f"{seq + 1}:{record.hash}"]
            if await self._append(keys=[P + "audit", P + "audit:head"], args=args):
                return record

    async def audit_records(self, start: int = 0, stop: int = -1) -> list[AuditRecord]:
        """Return audit records by position."""
        return [AuditRecord(**json.loads(r)) for r in await self.redis.lrange(P + "audit", start, stop)]


def _head(head: str) -> tuple[int, str]:
    seq, _, digest = head.partition(":")
    return int(seq), digest


def _live_or_none(raw: bytes | None) -> LiveSite | None:
    if raw is None:
        return None
    try:
        return LiveSite.from_json(raw)
    except (ValueError, KeyError, TypeError):
        return None


def joined(bid: dict[str, Any], result: dict[str, Any] | None) -> ClearedBid:
    """Join a stored bid with its result."""
    price_h = (result or {}).get("clearing_price_eur_per_mw_per_h") or bid.get("price_eur_per_mw_per_h")
    return ClearedBid(
        bid_id=bid["bid_id"],
        direction=bid["direction"],
        start=datetime.fromisoformat(bid["interval_start"]),
        end=datetime.fromisoformat(bid["interval_end"]),
        capacity_mw=float(bid["capacity_mw"]),
        accepted=None if result is None else bool(result["accepted"]),
        accepted_mw=0.0 if result is None else float(result["accepted_mw"]),
        price_eur_per_mw_per_h=price_h,
        price_eur_per_mwh=(result or {}).get("clearing_price_eur_per_mwh") or bid.get("price_eur_per_mwh"),
    )


def labels(sites: dict[str, dict[str, Any]], ids: Iterable[str]) -> dict[str, str]:
    """Return a searchable label (make, address, area) per site."""
    out = {}
    for site_id in ids:
        s = sites.get(site_id, {})
        out[site_id] = " ".join(str(s.get(k, "")) for k in ("make_model", "address", "area"))
    return out
