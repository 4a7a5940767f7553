"""Redis side of the live site state: pipelined reads and writes, freshness index."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

import redis.asyncio as aioredis
from aiokafka import AIOKafkaProducer

from hybridpool_shared import topics
from hybridpool_shared.messages import QuarterAggregated
from hybridpool_shared.sitestate import LAST_SEEN_KEY, STATE_INDEX_KEY, SiteLiveState, state_key

FIELD = "json"
TIMING_KEY = "telemetry:site_timing"  # hash: site_id → "min_run_minutes,lockout_minutes" from the registry
# One command per batch instead of one per site: redis-py spends far more per pipelined command than Redis.
# (Multi-key scripts need every key in one slot on Redis Cluster; the platform runs Redis standalone.)
_WRITE = (
    """
for i, key in ipairs(KEYS) do redis.call('HSET', key, 'json', ARGV[i + 1]) end
local ids, seen = {}, {}
for i = #KEYS + 2, #ARGV do ids[#ids + 1] = ARGV[i]; seen[#seen + 1] = ARGV[1]; seen[#seen + 1] = ARGV[i] end
redis.call('SADD', '"""
    + STATE_INDEX_KEY
    + """', unpack(ids))
redis.call('ZADD', '"""
    + LAST_SEEN_KEY
    + """', unpack(seen))
return #KEYS
"""
)
_READ = """
local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('HGET', key, 'json') end
return out
"""
CHUNK = 2000  # Lua's unpack() takes a few thousand values at most


class LiveStateStore:
    """Reads and writes SiteLiveState hashes, one pipeline per batch of sites."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._write = redis.register_script(_WRITE)
        self._read = redis.register_script(_READ)

    async def load(self, site_ids: Sequence[str]) -> dict[str, SiteLiveState]:
        """Return the stored states of the given sites (absent ones are left out): one call per chunk."""
        raw: list[bytes | None] = []
        for start in range(0, len(site_ids), CHUNK):
            part = site_ids[start : start + CHUNK]
            raw += await self._read(keys=[state_key(s) for s in part])
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

    async def save_json(self, docs: dict[str, str], seen_s: float) -> None:
        """Write ready-made state documents, the index and their arrival time: one script call per chunk."""
        ids = list(docs)
        for start in range(0, len(ids), CHUNK):
            part = ids[start : start + CHUNK]
            keys = [state_key(s) for s in part]
            await self._write(keys=keys, args=[repr(seen_s), *(docs[s] for s in part), *part])

    async def set_timing(self, site_id: str, minutes: tuple[int, int] | None) -> None:
        """Store (or with None forget) a site's minimum run and lock-out minutes."""
        if minutes is None:
            await self.redis.hdel(TIMING_KEY, site_id)
        else:
            await self.redis.hset(TIMING_KEY, site_id, f"{minutes[0]},{minutes[1]}")

    async def timings(self, site_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        """Return the stored minimum run and lock-out minutes of the given sites (one command)."""
        if not site_ids:
            return {}
        raw = await self.redis.hmget(TIMING_KEY, list(site_ids))
        out = {}
        for site_id, value in zip(site_ids, raw, strict=True):
            if value is not None:
                text = value.decode() if isinstance(value, bytes) else str(value)
                run, rest = text.split(",")
                out[site_id] = (int(run), int(rest))
        return out

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


class QuarterProducer:
    """A plain aiokafka producer for the aggregates: a third of FastStream's per-message cost.

    Aggregates come in bursts (every site closes a quarter at once), so this path matters; records carry
    the same key and headers as `hybridpool_shared.messaging.publish` gives them.
    """

    def __init__(self, bootstrap: str, idempotence: bool) -> None:
        self.producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            client_id="hybridpool-telemetry-quarters",
            acks="all",
            enable_idempotence=idempotence,
            linger_ms=5,
        )

    async def start(self) -> None:
        """Connect to the broker."""
        await self.producer.start()

    async def stop(self) -> None:
        """Flush and disconnect."""
        await self.producer.stop()

    async def send_all(self, quarters: Sequence[QuarterAggregated]) -> None:
        """Send the aggregates and wait until the broker has every one."""
        spec = topics.SITES_TELEMETRY_QUARTER
        headers = [("content-type", b"application/json"), ("message-type", b"QuarterAggregated")]
        futures = [
            await self.producer.send(spec.name, q.to_json_bytes(), key=q.kafka_key(), headers=headers)
            for q in quarters
        ]
        await asyncio.gather(*futures)
