"""Redis side of the live site state: pipelined reads and writes, freshness index."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import redis.asyncio as aioredis

from hybridpool_shared.sitestate import LAST_SEEN_KEY, STATE_INDEX_KEY, SiteLiveState, state_key

FIELD = "json"


class LiveStateStore:
    """Reads and writes SiteLiveState hashes, one pipeline per batch of sites."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def load(self, site_ids: Sequence[str]) -> dict[str, SiteLiveState]:
        """Return the stored states of the given sites (absent ones are left out)."""
        if not site_ids:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for site_id in site_ids:
            pipe.hget(state_key(site_id), FIELD)
        raw = await pipe.execute()
        return {
            site_id: SiteLiveState.model_validate_json(value)
            for site_id, value in zip(site_ids, raw, strict=True)
            if value is not None
        }

    async def save(self, states: Iterable[SiteLiveState], *, touch: bool = True) -> int:
        """Write states, the index and (with touch) their arrival time, in one pipeline; return the count."""
        pipe = self.redis.pipeline(transaction=False)
        seen: dict[str, float] = {}
        ids: list[str] = []
        for state in states:
            pipe.hset(state_key(state.site_id), FIELD, state.model_dump_json())
            ids.append(state.site_id)
            if touch and state.received_at is not None:
                seen[state.site_id] = state.received_at.timestamp()
        if not ids:
            return 0
        pipe.sadd(STATE_INDEX_KEY, *ids)
        if seen:
            pipe.zadd(LAST_SEEN_KEY, seen)
        await pipe.execute()
        return len(ids)

    async def count_between(self, oldest_s: float, newest_s: float) -> int:
        """Return how many sites last reported within [oldest_s, newest_s] (epoch seconds)."""
        return int(await self.redis.zcount(LAST_SEEN_KEY, oldest_s, newest_s))

    async def seen_between(self, oldest_s: float, newest_s: float, limit: int = 10_000) -> list[str]:
        """Return up to limit site ids whose last reading arrived within (oldest_s, newest_s]."""
        raw = await self.redis.zrangebyscore(LAST_SEEN_KEY, f"({oldest_s}", newest_s, start=0, num=limit)
        return [r.decode() if isinstance(r, bytes) else str(r) for r in raw]

    async def total(self) -> int:
        """Return how many sites have a state."""
        return int(await self.redis.zcard(LAST_SEEN_KEY))
