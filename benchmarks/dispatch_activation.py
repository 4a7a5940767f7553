"""Activation → all commands published, on the real (embedded) broker and Redis.

An mFRR up-activation asks for every unit of a fleet of N running, rested villas. The clock starts
when the dispatcher receives the activation and stops when the broker has confirmed the last
SwitchHeatPump: unit choice, one atomic Lua claim per unit (pipelined), building and publishing
every command keyed by site, and writing the command log. Each run uses fresh Redis keys.
Printed: per run the time to the last confirmed command, and over all commands of all runs the
p50/p99 of activation → that command confirmed (target p99 ≤ 1 s at 10,000 sites).

Run: `python -m benchmarks.dispatch_activation [--sites 10000] [--runs 5]`
(KAFKA_BOOTSTRAP/REDIS_URL use an existing broker/Redis; otherwise embedded ones are started).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from hybridpool_cli.infra import infrastructure
from hybridpool_shared.domain.reaction import percentile
from hybridpool_shared.messages import Direction, Message, PoolActivated, ReserveProduct, SwitchHeatPump
from hybridpool_shared.topics import TopicSpec, all_topics
from services.dispatch.adapters import CommandPublisher
from services.dispatch.dispatcher import Dispatcher
from services.dispatch.metrics import DispatchMetrics
from services.dispatch.settings import DispatchSettings

UNIT_KW = 2.0


async def redis_cpu_seconds(redis: aioredis.Redis) -> float:
    """Return the CPU time the Redis server has used so far (on a shared machine, steadier than wall time)."""
    cpu = await redis.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


async def one_run(
    bootstrap: str, redis_url: str, sites: int, run: int
) -> tuple[float, list[float], float, float]:
    """Dispatch one activation over `sites` units: (total, per-command, dispatcher CPU, Redis CPU) s."""
    prefix = f"bench{run}-{int(time.time())}"
    settings = DispatchSettings(
        kafka_bootstrap=bootstrap, redis_url=redis_url, key_prefix=prefix, margin=0.0, spare_share=0.0
    )
    redis = aioredis.from_url(redis_url)
    done: list[float] = []
    began = 0.0

    class TimedPublisher(CommandPublisher):
        async def publish_many(
            self,
            messages: Sequence[SwitchHeatPump],
            on_confirmed: Callable[[SwitchHeatPump], None] | None = None,
        ) -> None:
            def confirmed(m: SwitchHeatPump) -> None:
                done.append(time.perf_counter() - began)
                if on_confirmed is not None:
                    on_confirmed(m)

            await super().publish_many(messages, confirmed)

    out = TimedPublisher(bootstrap, idempotence=False, client_id="bench-dispatch")
    await out.start()  # connect outside the timed part: a running service is connected

    async def unused(spec: TopicSpec, message: Message) -> None:
        raise AssertionError(f"commands go through the command publisher, not {spec.name}")

    d = Dispatcher(settings, redis, unused, DispatchMetrics(CollectorRegistry()), commands_out=out)
    now = time.time()
    for i in range(sites):
        site = f"{prefix}-v{i:06d}"
        d.fleet.observe(site, now - 10, UNIT_KW, True)
        d.fleet.unit(site).running_since_s = now - 3600
    await d.warm_partitions()  # a running service has done this within seconds of learning its sites
    start = datetime.fromtimestamp(now, tz=UTC)
    activation = PoolActivated(
        activation_id=f"{prefix}-act",
        product=ReserveProduct.MFRR_ENERGY,
        direction=Direction.UP,
        power_mw=round(sites * UNIT_KW / 1000, 1),
        start=start,
        end=start + timedelta(minutes=15),
        requested_at=start,
    )
    try:
        redis0 = await redis_cpu_seconds(redis)
        cpu0 = time.process_time()
        began = time.perf_counter()
        await d.on_activation(activation)
        total = time.perf_counter() - began
        cpu = time.process_time() - cpu0
        redis_cpu = await redis_cpu_seconds(redis) - redis0
    finally:
        await out.stop()
        await redis.aclose()
    if len(done) != sites:
        raise RuntimeError(f"expected {sites} commands, published {len(done)}")
    return total, done, cpu, redis_cpu


async def main_async(bootstrap: str, redis_url: str, sites: int, runs: int) -> None:
    """Run and print the figures."""
    totals: list[float] = []
    per_command: list[float] = []
    redis_s: list[float] = []
    for run in range(runs):
        total, done, cpu, redis_cpu = await one_run(bootstrap, redis_url, sites, run)
        totals.append(total)
        per_command.extend(done)
        redis_s.append(redis_cpu)
        print(
            f"run {run + 1}: {sites} commands published in {total:.3f} s "
            f"(dispatcher CPU {cpu:.3f} s, Redis CPU {redis_cpu:.3f} s)"
        )
    print(
        f"activation → all {sites} commands published: median {statistics.median(totals):.3f} s, "
        f"max {max(totals):.3f} s over {runs} runs; Redis CPU median {statistics.median(redis_s):.3f} s"
    )
    print(
        f"activation → each command published: p50 {percentile(per_command, 0.5):.3f} s, "
        f"p99 {percentile(per_command, 0.99):.3f} s (target p99 ≤ 1 s)"
    )


def main() -> None:
    """Parse arguments, start embedded infrastructure if needed, run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    kafka, redis = os.environ.get("KAFKA_BOOTSTRAP"), os.environ.get("REDIS_URL")
    with (
        tempfile.TemporaryDirectory(prefix="hybridpool-bench-") as tmp,
        infrastructure(Path(tmp), all_topics(), kafka=kafka, redis=redis) as infra,
    ):
        asyncio.run(main_async(infra.kafka_bootstrap, infra.redis_url, args.sites, args.runs))


if __name__ == "__main__":
    main()
