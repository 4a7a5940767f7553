"""Redis state: the last published value per key (idempotent upserts) and the latest price curves.

- `price_ingest:published:<topic>` hash: key -> fingerprint of the last published value.
- `price_ingest:dead_lettered:<topic>` set: fingerprints of rejected records already parked.
- `prices:curve:<kind>:<area>:<product>:<direction>` sorted set: score = interval start (epoch s),
  member = the message JSON; trimmed to the newest `retention` before the curve's last interval.
- `prices:curves` set of curve ids, for listing.
An optional namespace prefixes every key (several environments or test runs on one Redis).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import redis.asyncio as aioredis

from services.price_ingest.domain.normalise import PriceMessage

CURVES = "prices:curves"


def curve_id(kind: str, area: str, product: str, direction: str) -> str:
    """Return the id of one curve: kind, area, product and direction."""
    return f"{kind}:{area}:{product}:{direction}"


class PriceStore:
    """Fingerprints of published prices and the latest curves, in Redis."""

    def __init__(
        self, redis: aioredis.Redis, curve_retention: timedelta = timedelta(days=62), namespace: str = ""
    ) -> None:
        self.redis = redis
        self.retention_s = curve_retention.total_seconds()
        self.ns = namespace

    async def published(self, topic: str, keys: Sequence[bytes]) -> dict[bytes, str]:
        """Return the last published fingerprint of each key that has one."""
        if not keys:
            return {}
        values = await self.redis.hmget(f"{self.ns}price_ingest:published:{topic}", list(keys))
        return {k: _text(v) for k, v in zip(keys, values, strict=True) if v is not None}

    async def remember(self, topic: str, kind: str, done: Sequence[tuple[bytes, str, PriceMessage]]) -> None:
        """Record fingerprints of published prices and upsert them into their curves."""
        if not done:
            return
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(f"{self.ns}price_ingest:published:{topic}", mapping={k: fp for k, fp, _ in done})
        curves: dict[str, float] = {}
        for _, _, msg in done:
            cid = curve_id(kind, msg.area, msg.product, msg.direction)
            score = msg.interval_start.timestamp()
            pipe.zremrangebyscore(f"{self.ns}prices:curve:{cid}", score, score)
            pipe.zadd(f"{self.ns}prices:curve:{cid}", {msg.to_json_bytes(): score})
            curves[cid] = max(curves.get(cid, score), score)
        pipe.sadd(self.ns + CURVES, *curves)
        await pipe.execute()
        await self._trim(curves)

    async def _trim(self, curves: dict[str, float]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for cid in curves:
            pipe.zrange(f"{self.ns}prices:curve:{cid}", -1, -1, withscores=True)
        newest = await pipe.execute()
        pipe = self.redis.pipeline(transaction=False)
        for cid, last in zip(curves, newest, strict=True):
            if last:
                pipe.zremrangebyscore(
                    f"{self.ns}prices:curve:{cid}", "-inf", f"({last[0][1] - self.retention_s}"
                )
        await pipe.execute()

    async def was_dead_lettered(self, topic: str, fingerprint: str) -> bool:
        """Return whether this rejected record was parked before."""
        return bool(await self.redis.sismember(f"{self.ns}price_ingest:dead_lettered:{topic}", fingerprint))

    async def mark_dead_lettered(self, topic: str, fingerprint: str) -> None:
        """Remember that a rejected record was parked, so re-ingesting does not park it again."""
        await self.redis.sadd(f"{self.ns}price_ingest:dead_lettered:{topic}", fingerprint)

    async def curves(self) -> list[str]:
        """Return the ids of every stored curve."""
        return sorted(_text(m) for m in await self.redis.smembers(self.ns + CURVES))

    async def read(self, cid: str, start: datetime | None, end: datetime | None) -> list[dict[str, Any]]:
        """Return a curve's prices with interval start in [start, end), oldest first."""
        low = start.timestamp() if start else "-inf"
        high = f"({end.timestamp()}" if end else "+inf"
        members = await self.redis.zrangebyscore(f"{self.ns}prices:curve:{cid}", low, high)
        return [json.loads(_text(m)) for m in members if isinstance(m, bytes | str)]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
