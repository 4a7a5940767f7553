"""Redis side of the live site state: pipelined reads and writes, freshness index."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder

from hybridpool_shared import topics
from hybridpool_shared.errors import PermanentError
from hybridpool_shared.messages import QuarterAggregated, SiteMasterDataChanged
from hybridpool_shared.messaging import parse
from hybridpool_shared.sitestate import (
    LAST_SEEN_KEY,
    STATE_INDEX_KEY,
    STATE_KEY_PREFIX,
    SiteLiveState,
    state_key,
)
from services.telemetry.domain.quarters import ClosedQuarter

TIMING_KEY = "telemetry:site_timing"  # hash: site_id → "min_run_minutes,lockout_minutes" from the registry
QUARTER_KEY_PREFIX = "telemetry:quarter:"  # string per site: its open quarter (snapshot + appended samples)
# One script call per chunk of sites instead of commands per site, and a handful of packed arguments
# instead of several per site: redis-py spends more encoding each argument than Redis spends on it.
# Site ids cannot hold a newline (SiteId's pattern) and orjson never writes a raw newline or \x1e.
_SPLIT = """
local function split(s, sep)
  local out, i = {}, 1
  if s == '' then return out end
  while true do
    local j = string.find(s, sep, i, true)
    if not j then out[#out + 1] = string.sub(s, i); return out end
    out[#out + 1] = string.sub(s, i, j - 1)
    i = j + #sep
  end
end
"""
# The open quarters go in the same call as the states, so Redis never holds one without the other.
# ARGV: seen_s, state site ids ("\n"), their state documents ("\n"), quarter site ids ("\n"), their
# quarter updates ("\x1e"): "S<snapshot>" replaces, "A<lines>" appends samples, "D" forgets.
# Keys are built from the ids, so this needs Redis standalone (as the platform runs it), not Cluster.
_WRITE = (
    _SPLIT
    + """
local ids, docs = split(ARGV[2], '\\n'), split(ARGV[3], '\\n')
if #ids > 0 then
  local seen = {}
  for i, id in ipairs(ids) do
    redis.call('HSET', '"""
    + STATE_KEY_PREFIX
    + """' .. id, 'json', docs[i])
    seen[#seen + 1] = ARGV[1]; seen[#seen + 1] = id
  end
  redis.call('SADD', '"""
    + STATE_INDEX_KEY
    + """', unpack(ids))
  redis.call('ZADD', '"""
    + LAST_SEEN_KEY
    + """', unpack(seen))
end
local qids, updates = split(ARGV[4], '\\n'), split(ARGV[5], '\\30')
for i, id in ipairs(qids) do
  local key, a = '"""
    + QUARTER_KEY_PREFIX
    + """' .. id, updates[i]
  local mode = string.sub(a, 1, 1)
  if mode == 'S' then redis.call('SET', key, string.sub(a, 2))
  elseif mode == 'A' then redis.call('APPEND', key, string.sub(a, 2))
  else redis.call('DEL', key) end
end
return #ids + #qids
"""
)
# ARGV: site ids ("\n"), "1" to also return open quarters and protection times; returns for each site
# its state (then its quarter and its "run,lockout" minutes).
_READ = (
    _SPLIT
    + """
local out = {}
local whole = ARGV[2] == '1'
for _, id in ipairs(split(ARGV[1], '\\n')) do
  out[#out + 1] = redis.call('HGET', '"""
    + STATE_KEY_PREFIX
    + """' .. id, 'json')
  if whole then
    out[#out + 1] = redis.call('GET', '"""
    + QUARTER_KEY_PREFIX
    + """' .. id)
    out[#out + 1] = redis.call('HGET', '"""
    + TIMING_KEY
    + """', id)
  end
end
return out
"""
)
# Compare-and-set: a state is replaced only if it is still the document the new one was made from.
_REPLACE = """
local n = #KEYS
local replaced = 0
for i = 1, n do
  if redis.call('HGET', KEYS[i], 'json') == ARGV[n + i] then
    redis.call('HSET', KEYS[i], 'json', ARGV[i])
    replaced = replaced + 1
  end
end
return replaced
"""
CHUNK = 2000  # Lua's unpack() takes a few thousand values at most
READ_CHUNK = 10_000  # sites per read call: one round trip for a whole batch, Redis blocked ~10 ms at most


@dataclass
class LoadedSites:
    """What Redis held of some sites: their state, open quarter and protection times, where it had any."""

    site_ids: set[str] = field(default_factory=set)
    states: dict[str, SiteLiveState] = field(default_factory=dict)
    quarters: dict[str, bytes] = field(default_factory=dict)
    timings: dict[str, tuple[int, int]] = field(default_factory=dict)

    def merged(self, other: LoadedSites) -> LoadedSites:
        """Return both loads together."""
        return LoadedSites(
            self.site_ids | other.site_ids,
            self.states | other.states,
            self.quarters | other.quarters,
            self.timings | other.timings,
        )


def _minutes(value: bytes | str) -> tuple[int, int]:
    """Return the (minimum run, lock-out) minutes of a stored "run,lockout" value."""
    run, rest = (value.decode() if isinstance(value, bytes) else value).split(",")
    return int(run), int(rest)


def quarter_key(site_id: str) -> str:
    """Return the Redis key of a site's open quarter."""
    return QUARTER_KEY_PREFIX + site_id


class LiveStateStore:
    """Reads and writes SiteLiveState hashes, one pipeline per batch of sites."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._write = redis.register_script(_WRITE)
        self._read = redis.register_script(_READ)
        self._replace = redis.register_script(_REPLACE)

    async def load(self, site_ids: Sequence[str]) -> dict[str, SiteLiveState]:
        """Return the stored states of the given sites (absent ones are left out): one call per chunk."""
        return {
            site_id: SiteLiveState.model_validate_json(raw)
            for site_id, raw in (await self.load_raw(site_ids)).items()
        }

    async def load_raw(self, site_ids: Sequence[str]) -> dict[str, bytes]:
        """Return the stored state documents of the given sites as they are (absent ones left out)."""
        raw = await self._read_chunks(site_ids, whole=False)
        return {site_id: value for site_id, value in zip(site_ids, raw, strict=True) if value is not None}

    async def replace_states(self, changes: dict[str, tuple[bytes, bytes]]) -> int:
        """Replace each site's state (was, now) where it still is `was`; return how many were replaced.

        A batch may write a site's newer state between a read and this write: that one is kept.
        """
        ids = list(changes)
        replaced = 0
        for start in range(0, len(ids), CHUNK):
            part = ids[start : start + CHUNK]
            args = [changes[s][1] for s in part] + [changes[s][0] for s in part]
            replaced += int(await self._replace(keys=[state_key(s) for s in part], args=args))
        return replaced

    async def load_sites(self, site_ids: Sequence[str]) -> LoadedSites:
        """Return the stored state, open quarter and protection times of the given sites: one call."""
        raw = await self._read_chunks(site_ids, whole=True)
        loaded = LoadedSites(set(site_ids))
        for site_id, state, quarter, timing in zip(site_ids, raw[0::3], raw[1::3], raw[2::3], strict=True):
            if state is not None:
                loaded.states[site_id] = SiteLiveState.model_validate_json(state)
            if quarter is not None:
                loaded.quarters[site_id] = quarter
            if timing is not None:
                loaded.timings[site_id] = _minutes(timing)
        return loaded

    async def _read_chunks(self, site_ids: Sequence[str], *, whole: bool) -> list[bytes | None]:
        raw: list[bytes | None] = []
        for start in range(0, len(site_ids), READ_CHUNK):
            part = site_ids[start : start + READ_CHUNK]
            raw += await self._read(args=["\n".join(part), "1" if whole else "0"])
        return raw

    async def save_json(self, docs: dict[str, bytes], seen_s: float, quarters: dict[str, bytes]) -> None:
        """Write ready-made state documents, the index, their arrival time and open-quarter updates.

        quarters maps a site to b"S<snapshot>", b"A<appended lines>" or b"D"; one script call per chunk
        of sites, all chunks sent at once.
        """
        ids = list(dict.fromkeys([*docs, *quarters]))
        calls = []
        for start in range(0, len(ids), CHUNK):
            part = ids[start : start + CHUNK]
            with_doc = [s for s in part if s in docs]
            with_quarter = [s for s in part if s in quarters]
            args: list[str | bytes] = [
                repr(seen_s),
                "\n".join(with_doc),
                b"\n".join(docs[s] for s in with_doc),
                "\n".join(with_quarter),
                b"\x1e".join(quarters[s] for s in with_quarter),
            ]
            calls.append(self._write(args=args))
        await asyncio.gather(*calls)  # chunks hold other sites: no order among them, one round trip

    async def set_timing(self, site_id: str, minutes: tuple[int, int] | None) -> None:
        """Store (or with None forget) a site's minimum run and lock-out minutes."""
        if minutes is None:
            await self.redis.hdel(TIMING_KEY, site_id)
        else:
            await self.redis.hset(TIMING_KEY, site_id, f"{minutes[0]},{minutes[1]}")

    async def count_between(self, oldest_s: float, newest_s: float) -> int:
        """Return how many sites last reported within [oldest_s, newest_s] (epoch seconds)."""
        return int(await self.redis.zcount(LAST_SEEN_KEY, oldest_s, newest_s))

    async def seen_between(self, oldest_s: float, newest_s: float, limit: int = 10_000) -> list[str]:
        """Return up to limit site ids whose last reading arrived within (oldest_s, newest_s]."""
        raw = await self.redis.zrangebyscore(LAST_SEEN_KEY, f"({oldest_s}", newest_s, start=0, num=limit)
        return [r.decode() if isinstance(r, bytes) else str(r) for r in raw]

    async def last_seen_between(
        self, oldest_s: float, newest_s: float, limit: int
    ) -> list[tuple[str, float]]:
        """Return up to limit (site id, last arrival) arrived within (oldest_s, newest_s], oldest first."""
        raw = await self.redis.zrangebyscore(
            LAST_SEEN_KEY, f"({oldest_s}", newest_s, start=0, num=limit, withscores=True
        )
        pairs = cast(list[tuple[bytes, float]], raw)
        return [(m.decode() if isinstance(m, bytes) else str(m), float(t)) for m, t in pairs]

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
            # A partition takes one batch per produce request: at the default 16 KB, the quarters a
            # batch of readings closes (~500 B each) went out in several round trips per partition.
            max_batch_size=512 * 1024,
        )
        self.partitioner = DefaultPartitioner()

    async def start(self) -> None:
        """Connect to the broker."""
        await self.producer.start()

    async def stop(self) -> None:
        """Flush and disconnect."""
        await self.producer.stop()

    async def send_all(self, quarters: Sequence[QuarterAggregated | ClosedQuarter]) -> None:
        """Send the aggregates and wait until the broker has every one."""
        await (await self.enqueue(quarters))

    async def enqueue(self, quarters: Sequence[QuarterAggregated | ClosedQuarter]) -> asyncio.Future[Any]:
        """Hand the aggregates to the producer; return what completes once the broker has every one.

        Records go into one batch per partition (chosen by key, as send() would), and the partitions
        are handed over concurrently: send() costs ~100 µs of Python per record, a batch append a few,
        and a partition takes a batch only once its previous one has left.
        """
        spec = topics.SITES_TELEMETRY_QUARTER
        headers = [("content-type", b"application/json"), ("message-type", b"QuarterAggregated")]
        partitions = sorted(await self.producer.partitions_for(spec.name))
        batches: dict[int, list[BatchBuilder]] = {}
        for q in quarters:
            key = q.kafka_key()
            builders = batches.setdefault(
                self.partitioner(key, partitions, partitions), [self.producer.create_batch()]
            )
            value = q.to_json_bytes()
            if builders[-1].append(key=key, value=value, timestamp=None, headers=headers) is None:
                builders.append(self.producer.create_batch())  # full: start the next one
                builders[-1].append(key=key, value=value, timestamp=None, headers=headers)
        sent = await asyncio.gather(*(self._send(spec.name, p, b) for p, b in batches.items()))
        return asyncio.gather(*(f for futures in sent for f in futures))

    async def _send(
        self, topic: str, partition: int, builders: list[BatchBuilder]
    ) -> list[asyncio.Future[Any]]:
        return [await self.producer.send_batch(b, topic, partition=partition) for b in builders]


class RegistryTail:
    """Every sites.registry change from start() on, read without a consumer group: each replica hears all.

    The service's registry group gives each change to one replica only, while the site's readings may be
    another replica's. Bad records are skipped here: the group consumer dead-letters them.
    """

    def __init__(self, bootstrap: str, positions: dict[int, int] | None = None) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, client_id="telemetry-tail"
        )
        # Next offset per partition, kept up to date: a tail built with an earlier one's resumes there.
        self.positions = {} if positions is None else positions

    async def start(self) -> None:
        """Connect and take position: where an earlier tail stopped, else at the end of every partition."""
        spec = topics.SITES_REGISTRY
        await self.consumer.start()
        await self.consumer.topics()  # metadata, so the topic's partitions are known
        parts = [
            TopicPartition(spec.name, p) for p in sorted(self.consumer.partitions_for_topic(spec.name) or ())
        ]
        if not parts:
            raise RuntimeError(f"topic {spec.name} has no partitions")
        self.consumer.assign(parts)
        fresh = [tp for tp in parts if tp.partition not in self.positions]
        for tp in parts:
            if tp.partition in self.positions:
                self.consumer.seek(tp, self.positions[tp.partition])
        if fresh and not await self.consumer.seek_to_end(*fresh):
            raise RuntimeError(f"no end offsets of {spec.name} in time")
        for tp in fresh:
            self.positions[tp.partition] = await self.consumer.position(tp)

    async def stop(self) -> None:
        """Disconnect."""
        await self.consumer.stop()

    async def changes(self) -> AsyncIterator[SiteMasterDataChanged]:
        """Yield each change as it arrives, forever."""
        while True:
            fetched = await self.consumer.getmany(timeout_ms=1000)
            for tp, records in fetched.items():
                for record in records:
                    self.positions[tp.partition] = record.offset + 1
                    try:
                        site = parse(topics.SITES_REGISTRY, record)
                    except PermanentError:
                        continue
                    yield cast(SiteMasterDataChanged, site)
