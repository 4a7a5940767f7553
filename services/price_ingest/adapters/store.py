"""Redis state: the last published value per key (idempotent upserts) and the latest price curves.

- `price_ingest:published:<topic>` hash: key -> fingerprint of the last published value.
- `price_ingest:dead_lettered:<topic>` set: fingerprints of rejected records already parked.
- `prices:curve:<kind>:<area>:<product>:<direction>` hash: UTC start -> the message JSON, with
  `prices:curve_index:<…>` sorted set: UTC start scored by epoch s, for range reads; both trimmed
  to `retention` before the curve's newest interval.
- `prices:curves` set of curve ids, for listing.
An optional namespace prefixes every key (several environments or test runs on one Redis).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import redis.asyncio as aioredis

from hybridpool_shared.messages.base import utc_key
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
        curves: dict[str, tuple[dict[str, bytes], dict[str, float]]] = {}
        for _, _, msg in done:
            values, scores = curves.setdefault(curve_id(kind, msg.area, msg.product, msg.direction), ({}, {}))
            slot = utc_key(msg.interval_start)
            values[slot] = msg.to_json_bytes()
            scores[slot] = msg.interval_start.timestamp()
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(f"{self.ns}price_ingest:published:{topic}", mapping={k: fp for k, fp, _ in done})
        for cid, (values, scores) in curves.items():
            pipe.hset(f"{self.ns}prices:curve:{cid}", mapping=values)  # type: ignore[arg-type]
            pipe.zadd(f"{self.ns}prices:curve_index:{cid}", scores)
        pipe.sadd(self.ns + CURVES, *curves)
        await pipe.execute()
        await self._trim(list(curves))

    async def _trim(self, curves: list[str]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for cid in curves:
            pipe.zrange(f"{self.ns}prices:curve_index:{cid}", -1, -1, withscores=True)
        newest = await pipe.execute()
        for cid, last in zip(curves, newest, strict=True):
            if not last:
                continue
            index = f"{self.ns}prices:curve_index:{cid}"
            old = await self.redis.zrangebyscore(index, "-inf", f"({last[0][1] - self.retention_s}")
            if old:
                await self.redis.hdel(f"{self.ns}prices:curve:{cid}", *old)
                await self.redis.zrem(index, *old)

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
        slots = await self.redis.zrangebyscore(f"{self.ns}prices:curve_index:{cid}", low, high)
        if not slots:
            return []
        values = await self.redis.hmget(f"{self.ns}prices:curve:{cid}", [_text(s) for s in slots])  # type: ignore[arg-type]
        return [json.loads(_text(v)) for v in values if v is not None]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
