"""Benchmark: one live-aggregation tick, one sites page, and event → live value latency on a real Redis.

Run `python -m benchmarks.opsroom_fleet [--sites 10000] [--rounds 10]`; it starts its own redis-server
on loopback (like `hybridpool up`), prints medians and the size of the per-tick event, and stops it.
The latency part runs the aggregation loop as the service does (1 s ticks), changes site states in
Redis and times how long until the pushed overview event shows the change (the page only renders it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import redis.asyncio as aioredis

from hybridpool_cli.infra import start_redis
from hybridpool_shared.sitestate import STATE_INDEX_KEY, SiteLiveState, state_key
from hybridpool_shared.timeutil import utc_now
from services.opsroom.adapters import OpsStore, labels
from services.opsroom.domain import Freshness, search_page
from services.opsroom.live import Aggregator, Broadcaster, LiveState


async def _fill(
    redis: aioredis.Redis, n: int, first: int = 0, step: int = 1, *, running: bool = True
) -> list[str]:
    now = utc_now()
    ids = [f"villa-{i:05d}" for i in range(first, n, step)]
    async with redis.pipeline(transaction=False) as pipe:
        for i, site_id in zip(range(first, n, step), ids, strict=True):
            state = SiteLiveState(
                site_id=site_id,
                measured_at=now - timedelta(seconds=i % 90),
                electric_power_kw=1.0 + (i % 4) if running and i % 3 else 0.0,
                meter_reading_kwh=float(i),
                hp_running=running and bool(i % 3),
                boiler_running=not (running and i % 3),
                sg_ready_state=2,
                indoor_temp_c=21.0,
                outdoor_temp_c=3.0,
                updated_at=now,
            )
            pipe.hset(state_key(site_id), "json", state.to_redis()["json"])
            pipe.sadd(STATE_INDEX_KEY, site_id)
        await pipe.execute()
    return ids


async def _run(url: str, sites: int, rounds: int) -> None:
    redis = aioredis.from_url(url)
    store = OpsStore(redis)
    ids = await _fill(redis, sites)
    live = LiveState(hp_power_kw=dict.fromkeys(ids, 2.5))
    aggregator = Aggregator(store, live, Broadcaster(), Freshness(60, 300), tick_s=1.0, alarm_share=0.5)
    tick_ms, page_ms = [], []
    overview: dict[str, object] = {}
    masters = {i: {"make_model": "Nibe F2040", "address": f"Vej {i}", "area": "DK1"} for i in ids}
    for r in range(rounds):
        await _fill(redis, sites, first=r % 10, step=10)  # a tenth of the fleet reported since the last tick
        started = time.perf_counter()
        overview = await aggregator.tick(utc_now())
        tick_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        found = search_page(masters, labels(masters, masters), "vej 12", 2, 50)
        await store.live(found.items)
        await store.balances(found.items)
        await store.reaction_samples(found.items)
        page_ms.append((time.perf_counter() - started) * 1000)
    latency_ms = await _live_latency(redis, aggregator, sites, rounds)
    await redis.aclose()
    size = len(json.dumps(overview, separators=(",", ":")))
    print(f"sites={sites} rounds={rounds} (a tenth of the sites write a new state before each tick)")
    print(f"aggregation tick: median {statistics.median(tick_ms):.1f} ms (budget per 1 s tick: 1000 ms)")
    print(f"sites page (search over all, 50 rows): median {statistics.median(page_ms):.1f} ms")
    print(f"overview event pushed per tick: {size} bytes (independent of fleet size)")
    print(
        f"state change in Redis → overview event pushed: median {statistics.median(latency_ms):.0f} ms, "
        f"max {max(latency_ms):.0f} ms over {len(latency_ms)} changes (target: on the page within 2,000 ms)"
    )


async def _live_latency(
    redis: aioredis.Redis, aggregator: Aggregator, sites: int, rounds: int
) -> list[float]:
    """Time from writing HPs off in Redis to the first pushed overview that counts them."""
    loop_task = asyncio.create_task(aggregator.run())
    latencies = []
    try:
        async with aggregator.hub.subscribe() as frames:
            for r in range(rounds):
                await asyncio.sleep(0.1 + 0.37 * (r % 3))  # changes land at different points of a tick
                expected = await _switch_off_share(redis, sites, first=r % 10)
                started = time.perf_counter()
                while True:
                    frame = await asyncio.wait_for(frames.get(), 10)
                    data = json.loads(frame.split("data: ", 1)[1])
                    if data["fleet"]["hp_running"] == expected:
                        break
                latencies.append((time.perf_counter() - started) * 1000)
                await _fill(redis, sites)
    finally:
        loop_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop_task
    return latencies


async def _switch_off_share(redis: aioredis.Redis, sites: int, first: int) -> int:
    """Write a tenth of the fleet as switched off; return how many HPs then run."""
    await _fill(redis, sites, first=first, step=10, running=False)
    return sum(1 for i in range(sites) if i % 3 and (i - first) % 10)


def main() -> None:
    """Parse arguments, start a Redis, run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sites", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="opsroom-bench-") as tmp:
        proc, url = start_redis(Path(tmp))
        try:
            asyncio.run(_run(url, args.sites, args.rounds))
        finally:
            proc.stop()


if __name__ == "__main__":
    main()
