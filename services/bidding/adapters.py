"""Adapters: what bidding keeps from its topics, the live site state in Redis, and the bid book."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis

from hybridpool_shared.domain.reaction import REQUIREMENTS, ReactionProfile, profile_key
from hybridpool_shared.messages import (
    BalancePriceComputed,
    BidCleared,
    DayAheadPriceIngested,
    ReactionMeasured,
    ReservePriceIngested,
    ReserveProduct,
    SiteMasterDataChanged,
    SitePoolMembershipChanged,
)
from hybridpool_shared.sitestate import STATE_INDEX_KEY, SiteLiveState, state_key
from hybridpool_shared.timeutil import QUARTER, require_utc

SITES_KEY = "bidding:sites"
REACTIONS_KEY = "bidding:reactions"
EXCLUDED_KEY = "bidding:excluded"  # sites an operator took out of the pool (from pool.membership)
DONE_KEY = "bidding:done"
LATEST_KEY = "bidding:latest"
RESULTS_KEY = "bidding:results"
FCR_FULL_ACTIVATION_S = 150.0


def product_name(raw: str) -> str:
    """Normalise a reserve product name from price ingestion (e.g. 'FCR-N', 'fcr_dk1')."""
    name = raw.strip().lower().replace("-", "_").replace(" ", "_")
    return {"fcr": "fcr_dk1", "fcrdk1": "fcr_dk1", "fcr_d_upp": "fcr_d_up", "fcr_d_ned": "fcr_d_down"}.get(
        name, name
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _ts(value: datetime) -> int:
    return int(require_utc(value).timestamp())


def _quarters(start: datetime, minutes: int) -> range:
    first = _ts(start)
    return range(first, first + minutes * 60, 900)


BOOK_KEY = "bidding:book"  # + ":<kind>:<UTC day>": one hash per kind and day of quarters, expiring
BOOK_DAYS_KEPT = {"spot": 2, "balance": 2, "reserve": 8}  # days past a quarter's day (reserve: forecasts)
DAY_S = 86400


@dataclass(frozen=True)
class BookEntry:
    """One quarter's price as the book keeps it and its Redis copy stores."""

    kind: str  # spot | reserve | balance
    key: str  # area, area|product, or site id
    quarter_ts: int
    value: str  # price, or balance price|COP

    def field(self) -> str:
        """The hash field: key and quarter."""
        return f"{self.key}|{self.quarter_ts}"


@dataclass
class Book:
    """Inputs kept in memory from the topics (prices, balance prices); each change is journalled.

    The journal (`pending`) is what a BookStore writes to Redis after the handler, so a restarted
    service plans with the prices it had, not with none until the next auction.
    """

    spot: dict[str, dict[int, float]] = field(default_factory=lambda: defaultdict(dict))
    reserve: dict[tuple[str, str], dict[int, float]] = field(default_factory=lambda: defaultdict(dict))
    balance: dict[str, dict[int, tuple[float, float]]] = field(default_factory=lambda: defaultdict(dict))
    pending: list[BookEntry] = field(default_factory=list)

    def add_spot(self, price: DayAheadPriceIngested) -> None:
        """Store a spot price (EUR/MWh) on every quarter of its interval (upsert)."""
        if price.price_eur_per_mwh is None:
            return
        for ts in _quarters(price.interval_start, price.interval_minutes):
            self.apply(BookEntry("spot", price.area, ts, repr(price.price_eur_per_mwh)))

    def add_reserve(self, price: ReservePriceIngested) -> None:
        """Store a capacity price (EUR/MW/h) on every quarter of its interval (upsert)."""
        if price.price_eur_per_mw_per_h is None:
            return
        key = f"{price.area}|{product_name(price.product)}"
        for ts in _quarters(price.interval_start, price.interval_minutes):
            self.apply(BookEntry("reserve", key, ts, repr(price.price_eur_per_mw_per_h)))

    def add_balance(self, price: BalancePriceComputed) -> None:
        """Store a site's balance price and COP on every quarter of its interval (upsert)."""
        value = f"{price.balance_price_eur_per_mwh!r}|{price.cop!r}"
        for ts in _quarters(price.interval_start, price.interval_minutes):
            self.apply(BookEntry("balance", price.site_id, ts, value))

    def apply(self, entry: BookEntry) -> None:
        """Apply one entry from a message and journal it for the Redis copy."""
        self._set(entry, overwrite=True)
        self.pending.append(entry)

    def restore(self, entry: BookEntry) -> None:
        """Apply one entry from the Redis copy, unless a message already set that quarter."""
        self._set(entry, overwrite=False)

    def _set(self, entry: BookEntry, *, overwrite: bool) -> None:
        target: dict[int, Any]
        value: Any
        if entry.kind == "spot":
            target, value = self.spot[entry.key], float(entry.value)
        elif entry.kind == "reserve":
            area, product = entry.key.split("|", 1)
            target, value = self.reserve[(area, product)], float(entry.value)
        elif entry.kind == "balance":
            price, cop = entry.value.split("|", 1)
            target, value = self.balance[entry.key], (float(price), float(cop))
        else:
            raise ValueError(f"unknown book entry kind {entry.kind!r}")
        if overwrite or entry.quarter_ts not in target:
            target[entry.quarter_ts] = value

    def take_pending(self) -> list[BookEntry]:
        """Return and forget the entries not yet written to Redis."""
        taken, self.pending = self.pending, []
        return taken

    def prune(self, before: datetime) -> None:
        """Forget prices of quarters before a time (keeps memory bounded; reserve keeps a week)."""
        cut = _ts(before)
        for spot in self.spot.values():
            for ts in [k for k in spot if k < cut]:
                del spot[ts]
        for balance in self.balance.values():
            for ts in [k for k in balance if k < cut]:
                del balance[ts]
        for prices in self.reserve.values():
            for ts in [k for k in prices if k < cut - 6 * 86400]:
                del prices[ts]

    def spot_quarters_between(self, area: str, lo: datetime, hi: datetime) -> int:
        """Return how many quarters in [lo, hi) have a spot price."""
        first, last = _ts(lo), _ts(hi)
        return sum(1 for ts in self.spot.get(area, {}) if first <= ts < last)

    def spot_at(self, area: str, quarter: datetime) -> float | None:
        """Return the spot price of an area's quarter, if known."""
        return self.spot.get(area, {}).get(_ts(quarter))

    def reserve_forecast(self, area: str, product: str, quarter: datetime) -> float | None:
        """Return the auction price for the quarter, else the latest one at the same time of day."""
        prices = self.reserve.get((area, product))
        if not prices:
            return None
        ts = _ts(quarter)
        if ts in prices:
            return prices[ts]
        same_time = [k for k in prices if (ts - k) % 86400 == 0 and k < ts]
        return prices[max(same_time)] if same_time else None


class BookStore:
    """The book's copy in Redis: one hash per kind and UTC day, expiring when its quarters are old."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def flush(self, book: Book) -> int:
        """Write the book's pending entries in one pipeline; return how many were written."""
        entries = book.take_pending()
        if not entries:
            return 0
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                expiries: dict[str, int] = {}
                for e in entries:
                    day = e.quarter_ts // DAY_S
                    key = f"{BOOK_KEY}:{e.kind}:{day}"
                    pipe.hset(key, e.field(), e.value)
                    expiries[key] = (day + 1 + BOOK_DAYS_KEPT[e.kind]) * DAY_S
                for key, at in expiries.items():
                    pipe.expireat(key, at)
                await pipe.execute()
        except Exception:
            book.pending[:0] = entries  # kept for the next flush; the handler's retry writes them again
            raise
        return len(entries)

    async def load(self, book: Book, now: datetime) -> int:
        """Fill the book from Redis (at start); return how many quarters were restored."""
        today = _ts(now) // DAY_S
        restored = 0
        for kind, kept in BOOK_DAYS_KEPT.items():
            for day in range(today - kept, today + 3):
                raw = await self.redis.hgetall(f"{BOOK_KEY}:{kind}:{day}")
                for f, v in raw.items():
                    key, ts = _text(f).rsplit("|", 1)
                    book.restore(BookEntry(kind, key, int(ts), _text(v)))
                restored += len(raw)
        return restored


class SiteStore:
    """Registry master data kept in a Redis hash (restarts need no replay) plus reaction profiles."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def upsert(self, site: SiteMasterDataChanged) -> None:
        """Store or remove a site."""
        if site.deleted:
            await self.redis.hdel(SITES_KEY, site.site_id)
        else:
            await self.redis.hset(SITES_KEY, site.site_id, site.to_json_bytes())

    async def all(self) -> dict[str, SiteMasterDataChanged]:
        """Return every registered site by id."""
        raw = await self.redis.hvals(SITES_KEY)
        sites = (SiteMasterDataChanged.from_json_bytes(v) for v in raw)
        return {s.site_id: s for s in sites}

    async def set_membership(self, change: SitePoolMembershipChanged) -> None:
        """Remember whether an operator keeps the site in the pool."""
        if change.in_pool:
            await self.redis.srem(EXCLUDED_KEY, change.site_id)
        else:
            await self.redis.sadd(EXCLUDED_KEY, change.site_id)

    async def excluded(self) -> set[str]:
        """Return the sites an operator has taken out of the pool."""
        return {_text(s) for s in await self.redis.smembers(EXCLUDED_KEY)}

    async def record_reaction(self, reaction: ReactionMeasured) -> None:
        """Fold a measured reaction into the site's response share (EWMA, 0.2 weight per reaction).

        A reaction counts as delivered if the site reached 90 % of the expected change within the FCR
        full-activation time (150 s); it is idempotent per command id.
        """
        raw = await self.redis.hget(REACTIONS_KEY, reaction.site_id)
        profile: dict[str, Any] = json.loads(raw) if raw else {"response": 1.0, "commands": []}
        if reaction.command_id in profile["commands"]:
            return
        fast = (
            reaction.responded
            and reaction.reached_90_at is not None
            and ((reaction.reached_90_at - reaction.sent_at).total_seconds() <= FCR_FULL_ACTIVATION_S)
        )
        profile["response"] = 0.8 * float(profile["response"]) + 0.2 * (1.0 if fast else 0.0)
        profile["commands"] = [*profile["commands"][-49:], reaction.command_id]
        await self.redis.hset(REACTIONS_KEY, reaction.site_id, json.dumps(profile))

    async def responses(
        self, areas: dict[str, str], assumed: dict[str, float], product: ReserveProduct | None = None
    ) -> dict[str, float]:
        """Return each site's deliverable share for the reserve product of its area.

        Dispatch's reaction profile (`dispatch:reaction_profile:<site>`) is judged against that
        product's full-activation time; without one, the EWMA this service keeps from
        `dispatch.reactions` (FCR-N's 150 s only); without either, the share assumed for the product.
        A product given judges every site against that product instead (FCR-D: 30 s).
        """
        raw = await self.redis.hgetall(REACTIONS_KEY)
        ewma = {_text(k): float(json.loads(v)["response"]) for k, v in raw.items()}
        result: dict[str, float] = {}
        judged = {site_id: product or area_product(area) for site_id, area in areas.items()}
        for site_id, against in judged.items():
            if site_id in ewma and against is ReserveProduct.FCR_N:
                result[site_id] = ewma[site_id]
            else:
                result[site_id] = assumed[against.value]
        site_ids = sorted(areas)
        for start in range(0, len(site_ids), 500):
            chunk = site_ids[start : start + 500]
            pipe = self.redis.pipeline(transaction=False)
            for site_id in chunk:
                pipe.hgetall(profile_key(site_id))
            for site_id, fields in zip(chunk, await pipe.execute(), strict=True):
                if fields and b"json" in fields:
                    try:
                        profile = ReactionProfile.from_redis(fields)
                    except ValueError:
                        continue
                    if profile.samples > 0:
                        deadline_s = full_activation_s(judged[site_id])
                        result[site_id] = profile_response(profile, deadline_s)
        return result


def area_product(area: str) -> ReserveProduct:
    """The symmetric frequency reserve the pool offers in an area: FCR in DK1, FCR-N in DK2."""
    return ReserveProduct.FCR_DK1 if area == "DK1" else ReserveProduct.FCR_N


def full_activation_s(product: ReserveProduct) -> float:
    """The strictest time by which a product wants 100 % (FCR-N: the seed's 150 s; FCR DK1: 30 s)."""
    return min(c.within_s for c in REQUIREMENTS[product.value] if c.share >= 1.0)


def profile_response(profile: ReactionProfile, deadline_s: float = FCR_FULL_ACTIVATION_S) -> float:
    """Deliverable share from a reaction profile: responding share × (deadline / p90 to 90 %, at most 1)."""
    share = 1.0 - profile.never_responded_share
    p90 = profile.reached_90_s.p90_s
    if p90 is None:
        return 0.0
    return round(share * min(1.0, deadline_s / max(p90, 1e-9)), 4)


async def live_states(redis: aioredis.Redis, site_ids: list[str]) -> dict[str, SiteLiveState]:
    """Read the live state of the given sites (and of indexed sites) from Redis; absent ones are skipped."""
    indexed = {_text(m) for m in await redis.smembers(STATE_INDEX_KEY)}
    wanted = sorted(set(site_ids) | indexed)
    states: dict[str, SiteLiveState] = {}
    for chunk_start in range(0, len(wanted), 500):
        chunk = wanted[chunk_start : chunk_start + 500]
        pipe = redis.pipeline(transaction=False)
        for site_id in chunk:
            pipe.hgetall(state_key(site_id))
        for site_id, fields in zip(chunk, await pipe.execute(), strict=True):
            if fields and b"json" in fields:
                try:
                    states[site_id] = SiteLiveState.from_redis(fields)
                except ValueError:
                    continue
    return states


# A trigger's field in DONE_KEY: "pending <epoch s> <token>" while a run plans and publishes it, then
# "done" ("1", written before pending claims existed, also means done). A pending claim older than the
# bound is a crashed run's and is taken over; a run that overlaps its successor only publishes the same
# plan and bid ids twice.
CLAIM_TRIGGER_LUA = r"""
local held = redis.call('HGET', KEYS[1], ARGV[1])
if held then
  local since = tonumber(string.match(held, '^pending (%d+) '))
  if not since or since > tonumber(ARGV[3]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""
RELEASE_TRIGGER_LUA = r"""
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
"""
TRIGGER_DONE = "done"


class TriggerClaims:
    """Claims of triggering events, so each is planned and published at least once and then not again."""

    def __init__(self, redis: aioredis.Redis, stale_after_s: float) -> None:
        self.redis = redis
        self.stale_after_s = stale_after_s
        self._claim = redis.register_script(CLAIM_TRIGGER_LUA)
        self._release = redis.register_script(RELEASE_TRIGGER_LUA)

    async def claim(self, trigger: str, now_s: float) -> str | None:
        """Claim a trigger neither done nor freshly pending; return the claim, or None if refused."""
        claim = f"pending {int(now_s)} {uuid.uuid4().hex}"
        stale_before = int(now_s - self.stale_after_s)
        taken = await self._claim(keys=[DONE_KEY], args=[trigger, claim, stale_before])
        return claim if int(taken) else None

    async def release(self, trigger: str, claim: str) -> bool:
        """Give a claim back if it is still this one (a failed run); return whether it was."""
        return bool(int(await self._release(keys=[DONE_KEY], args=[trigger, claim])))

    async def finish(self, trigger: str) -> None:
        """Mark a trigger done: its plan and bids are published and its summary stored."""
        await self.redis.hset(DONE_KEY, trigger, TRIGGER_DONE)


async def save_latest(redis: aioredis.Redis, kind: str, summary: dict[str, Any]) -> None:
    """Keep the latest summary of a kind (plan, bids, sizing) for the read API."""
    await redis.hset(LATEST_KEY, kind, json.dumps(summary, default=str))


async def load_latest(redis: aioredis.Redis, kind: str) -> dict[str, Any] | None:
    """Return the latest summary of a kind, if any."""
    raw = await redis.hget(LATEST_KEY, kind)
    return json.loads(raw) if raw else None


async def save_result(redis: aioredis.Redis, result: BidCleared) -> None:
    """Remember a clearing result for the read API (upsert by bid id)."""
    await redis.hset(RESULTS_KEY, result.bid_id, result.to_json_bytes())


async def load_results(redis: aioredis.Redis) -> list[dict[str, Any]]:
    """Return every clearing result seen."""
    raw = await redis.hvals(RESULTS_KEY)
    return [json.loads(v) for v in raw]


def quarter_ts(first: datetime, index: int) -> datetime:
    """Return the UTC start of quarter index from first."""
    return require_utc(first) + index * QUARTER
