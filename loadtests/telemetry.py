"""Telemetry load tests on the real embedded broker and Redis, each started by this script.

fleet       site_sim simulates --sites villas reporting every --interval s through the broker to the
            telemetry service and Redis; prints sustained readings/s, end-to-end lag (reading timestamp
            → state written in Redis) p50/p99, CPU and memory per process.
throughput  pre-loads the broker with --readings-per-site readings of --sites sites (spanning a quarter
            boundary, so quarters close and are published), measures a raw consumer draining them
            (the baseline), then one telemetry process draining them into Redis with its aggregates;
            prints both rates and their ratio, batch latency p50/p99, CPU and memory.

    python -m loadtests.telemetry fleet --sites 10000 --interval 10 --seconds 60
    python -m loadtests.telemetry throughput --sites 100000 --readings-per-site 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from hybridpool_cli import supervisor
from hybridpool_cli.infra import Infrastructure, ManagedProcess, free_port, infrastructure, spawn
from hybridpool_shared import topics
from hybridpool_shared.sitestate import LAST_SEEN_KEY, SiteLiveState, state_key
from hybridpool_shared.topics import all_topics

TOPIC = topics.SITES_TELEMETRY.name
QUARTER_S = 900.0


# ---- measuring processes ---------------------------------------------------------------------------


@dataclass
class ProcStats:
    """CPU seconds and peak memory of one process over a measurement."""

    name: str
    proc: psutil.Process
    cpu0: float = 0.0
    rss_peak_mb: float = 0.0

    def start(self) -> None:
        """Mark the start of the measurement."""
        self.cpu0 = _cpu(self.proc)

    def sample(self) -> None:
        """Record memory now."""
        with suppress(psutil.Error):
            self.rss_peak_mb = max(self.rss_peak_mb, self.proc.memory_info().rss / 2**20)

    def cpu_percent(self, elapsed_s: float) -> float:
        """Return the mean CPU use (100 = one core) since start."""
        return 100.0 * (_cpu(self.proc) - self.cpu0) / elapsed_s


def _cpu(proc: psutil.Process) -> float:
    try:
        t = proc.cpu_times()
        return float(t.user + t.system)
    except psutil.Error:
        return 0.0


def _stats(procs: Sequence[ManagedProcess]) -> list[ProcStats]:
    return [ProcStats(p.name, psutil.Process(p.proc.pid)) for p in procs]


def _counter(url: str, name: str, label: str = "") -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#") and label in line
    )


def _quantile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _print_procs(stats: Sequence[ProcStats], elapsed_s: float) -> None:
    print(f"  {'process':<12} {'CPU % (100 = 1 core)':>22} {'peak RSS MB':>12}")
    for s in stats:
        print(f"  {s.name:<12} {s.cpu_percent(elapsed_s):>22.1f} {s.rss_peak_mb:>12.1f}")


# ---- infrastructure and services --------------------------------------------------------------------


@contextmanager
def platform(
    names: Sequence[str], env: dict[str, str]
) -> Iterator[tuple[Infrastructure, list[ManagedProcess], list[supervisor.RunningService]]]:
    """Embedded broker and Redis, plus the named services, all stopped on exit."""
    with tempfile.TemporaryDirectory(prefix="hybridpool-load-") as tmp:
        data_dir = Path(tmp)
        with infrastructure(data_dir, all_topics()) as infra:
            procs: list[ManagedProcess] = []
            try:
                procs, running = supervisor.start_services(names, infra, data_dir, env)
                supervisor.wait_healthy(running, procs, 90.0)
                yield infra, [*infra.processes, *procs], running
            finally:
                supervisor.stop_all(procs)


def _url(running: Sequence[supervisor.RunningService], name: str) -> str:
    return next(r.url for r in running if r.name == name)


# ---- fleet mode --------------------------------------------------------------------------------------


def _sample_lags(client: redis.Redis, site_ids: Sequence[str], seen: dict[str, float]) -> list[float]:
    """Return reading → Redis lags of states that changed since the last look."""
    pipe = client.pipeline(transaction=False)
    for sid in site_ids:
        pipe.hget(state_key(sid), "json")
    lags = []
    for sid, raw in zip(site_ids, pipe.execute(), strict=True):
        if raw is None:
            continue
        st = SiteLiveState.model_validate_json(raw)
        measured = st.measured_at.timestamp()
        if seen.get(sid) != measured:
            seen[sid] = measured
            lags.append((st.updated_at - st.measured_at).total_seconds())
    return lags


def fleet(sites: int, interval_s: float, seconds: float, warmup_s: float) -> dict[str, float]:
    """Run the simulated fleet through broker, telemetry and Redis; print and return the figures."""
    env = {"SITE_SIM_SITES": str(sites), "SITE_SIM_TELEMETRY_INTERVAL_S": str(interval_s)}
    print(f"fleet: {sites} villas every {interval_s:g} s for {seconds:g} s (after {warmup_s:g} s warm-up)")
    with platform(["telemetry", "site_sim"], env) as (infra, procs, running):
        tel = _url(running, "telemetry")
        client = redis.Redis.from_url(infra.redis_url)
        ids = [f"sim-villa-{i:05d}" for i in range(sites)]
        _wait(lambda: client.zcard(LAST_SEEN_KEY) >= 0.9 * sites, warmup_s + 60)
        time.sleep(warmup_s)
        stats = _stats(procs)
        for s in stats:
            s.start()
        seen: dict[str, float] = {}
        _sample_lags(client, ids, seen)
        n0, t0 = _counter(tel, "hybridpool_telemetry_readings_total"), time.monotonic()
        lags: list[float] = []
        while time.monotonic() - t0 < seconds:
            time.sleep(1.0)
            lags += _sample_lags(client, random.sample(ids, min(len(ids), 2000)), seen)
            for s in stats:
                s.sample()
        elapsed = time.monotonic() - t0
        n1 = _counter(tel, "hybridpool_telemetry_readings_total")
        result = {
            "readings_per_s": (n1 - n0) / elapsed,
            "expected_per_s": sites * 0.99 / interval_s,
            "lag_p50_s": _quantile(lags, 0.5),
            "lag_p99_s": _quantile(lags, 0.99),
            "lag_samples": float(len(lags)),
        }
        print(
            f"  sustained {result['readings_per_s']:.0f} readings/s "
            f"(offered ≈ {result['expected_per_s']:.0f}/s); "
            f"lag reading → Redis p50 {result['lag_p50_s']:.3f} s, p99 {result['lag_p99_s']:.3f} s "
            f"({len(lags)} samples)"
        )
        _print_procs(stats, elapsed)
        client.close()
        return result


def _wait(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.5)


# ---- throughput mode ----------------------------------------------------------------------------------


def _reading(site: str, at: float, meter: float, on: bool) -> bytes:
    stamp = datetime.fromtimestamp(at, tz=UTC).isoformat()
    power = 2.5 if on else 0.0
    return (
        f'{{"site_id":"{site}","measured_at":"{stamp}","electric_power_kw":{power},'
        f'"meter_reading_kwh":{meter:.3f},"heat_power_kw":{power * 3},"supply_temp_c":40.0,'
        f'"return_temp_c":35.0,"indoor_temp_c":21.0,"outdoor_temp_c":2.0,"hp_running":{json.dumps(on)},'
        f'"boiler_running":false,"sg_ready_state":2}}'
    ).encode()


def readings(sites: int, per_site: int, spacing_s: float, now: float) -> Iterator[tuple[bytes, bytes]]:
    """Yield (key, JSON) of per_site readings of each site, oldest first, spanning quarter boundaries.

    Sites' readings are spread evenly over a quarter (each site its own phase) and start at a quarter
    boundary in the past, so how many quarters close does not depend on the wall clock.
    """
    base = now - now % QUARTER_S - (per_site + 1) * spacing_s - QUARTER_S
    for k in range(per_site):
        for i in range(sites):
            site = f"load-{i:06d}"
            at = base + (i * 7919) % int(QUARTER_S) + k * spacing_s
            yield site.encode(), _reading(site, at, 1000.0 + i + k * 0.5, i % 2 == 0)


async def preload(bootstrap: str, sites: int, per_site: int, spacing_s: float) -> int:
    """Publish the readings() of the sites; return the count."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks=1, linger_ms=20, max_batch_size=512 * 1024, compression_type=None
    )
    await producer.start()
    try:
        futures, sent = [], 0
        for key, value in readings(sites, per_site, spacing_s, time.time()):
            futures.append(await producer.send(TOPIC, value, key=key))
            sent += 1
            if len(futures) >= 20_000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
        return sent
    finally:
        await producer.stop()


async def baseline(bootstrap: str, total: int, parse: bool) -> float:
    """Return readings/s of a raw consumer draining the topic (optionally parsing each with the model)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = [TopicPartition(TOPIC, p) for p in consumer.partitions_for_topic(TOPIC) or set()]
        if not parts:
            parts = [TopicPartition(TOPIC, p) for p in range(topics.SITES_TELEMETRY.partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        model = topics.SITES_TELEMETRY.model
        count, started = 0, time.monotonic()
        while count < total:
            batch = await consumer.getmany(timeout_ms=1000, max_records=2000)
            for records in batch.values():
                count += len(records)
                if parse:
                    for r in records:
                        model.model_validate_json(r.value or b"")
        return total / (time.monotonic() - started)
    finally:
        await consumer.stop()


def throughput(
    sites: int, per_site: int, spacing_s: float, batch: int, runs: int = 3, profile: str = ""
) -> dict[str, float]:
    """Run the drain `runs` times on fresh infrastructure; print each run and the medians."""
    print(
        f"throughput: {sites} sites × {per_site} readings, {spacing_s:g} s apart; batch {batch}; "
        f"{runs} runs; load average {_load()}"
    )
    results = [
        _throughput_once(sites, per_site, spacing_s, batch, profile if n == 0 else "") for n in range(runs)
    ]
    rate = statistics.median(r["readings_per_s"] for r in results)
    raw = statistics.median(r["raw_per_s"] for r in results)
    summary = {
        "readings_per_s": rate,
        "raw_per_s": raw,
        "ratio": rate / raw,
        "batch_p99_s": statistics.median(r["batch_p99_s"] for r in results),
    }
    each = ", ".join(f"{r['readings_per_s']:,.0f}" for r in results)
    print(
        f"telemetry: median of {runs} runs {rate:,.0f} readings/s "
        f"(runs: {each}); "
        f"raw baseline median {raw:,.0f}/s; ratio {rate / raw:.3f}; "
        f"target ≥ 20,000/s {'met' if rate >= 20_000 else 'NOT met'}; load average now {_load()}"
    )
    return summary


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _throughput_once(
    sites: int, per_site: int, spacing_s: float, batch: int, profile: str
) -> dict[str, float]:
    """Pre-load readings, measure the raw baseline, then one telemetry process draining them."""
    with tempfile.TemporaryDirectory(prefix="hybridpool-load-") as tmp:
        data_dir = Path(tmp)
        with infrastructure(data_dir, all_topics()) as infra:
            started = time.monotonic()
            total = asyncio.run(preload(infra.kafka_bootstrap, sites, per_site, spacing_s))
            print(f"  pre-loaded {total} readings in {time.monotonic() - started:.1f} s")
            raw = asyncio.run(baseline(infra.kafka_bootstrap, total, parse=False))
            parsed = asyncio.run(baseline(infra.kafka_bootstrap, total, parse=True))
            print(
                f"  baseline raw consumer: {raw:,.0f} readings/s; with strict model parsing: {parsed:,.0f}/s"
            )
            env = {"TELEMETRY_BATCH_MAX_RECORDS": str(batch)}
            procs, running = _start_telemetry(infra, data_dir, env, profile)
            try:
                supervisor.wait_healthy(running, procs, 90.0)
                print(f"  telemetry process pid {procs[0].proc.pid}")
                result = _drain(running[0].url, procs[0], infra, total, raw)
            finally:
                supervisor.stop_all(procs)
            if profile:
                print(f"  cProfile of the telemetry process written to {profile}")
            return {**result, "raw_per_s": raw}


def _start_telemetry(
    infra: Infrastructure, data_dir: Path, env: dict[str, str], profile: str
) -> tuple[list[ManagedProcess], list[supervisor.RunningService]]:
    """Start the telemetry service, under cProfile (written on shutdown) when profile names a file."""
    if not profile:
        return supervisor.start_services(["telemetry"], infra, data_dir, env)
    port = free_port()
    full_env = supervisor.service_env("telemetry", infra, port, data_dir / "infra.json", env)
    argv = [sys.executable, "-m", "loadtests.profiled", profile, "services.telemetry"]
    proc = spawn("telemetry", argv, data_dir / "logs" / "telemetry.log", full_env)
    return [proc], [supervisor.RunningService("telemetry", proc.proc.pid, port, str(proc.log))]


def _drain(url: str, proc: ManagedProcess, infra: Infrastructure, total: int, raw: float) -> dict[str, float]:
    stats = _stats([proc, *infra.processes])
    samples: list[tuple[float, float]] = []
    first: tuple[float, float] | None = None
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        done = _counter(url, "hybridpool_messages_processed_total", 'topic="sites.telemetry"')
        now = time.monotonic()
        if first is None and done > 0:
            first = (now, done)
            for s in stats:
                s.start()
        for s in stats:
            s.sample()
        samples.append((now, done))
        if done >= total:
            break
        time.sleep(0.25)
    if first is None:
        raise RuntimeError("the telemetry service processed nothing")
    end_t, end_n = samples[-1]
    elapsed = max(1e-6, end_t - first[0])
    rate = (end_n - first[1]) / elapsed
    p50, p99 = _batch_latency(url)
    quarters = _counter(url, "hybridpool_telemetry_quarters_total")
    client = redis.Redis.from_url(infra.redis_url)
    in_redis = int(client.zcard(LAST_SEEN_KEY))
    client.close()
    print(
        f"  telemetry drained {end_n:.0f}/{total} readings at {rate:,.0f} readings/s "
        f"= {rate / raw:.2f} × the raw baseline; {in_redis} site states in Redis, "
        f"{quarters:.0f} quarters published"
    )
    print(f"  batch latency (consumed → Redis written, quarters published): p50 {p50:.3f} s, p99 {p99:.3f} s")
    _print_procs(stats, elapsed)
    return {"readings_per_s": rate, "ratio": rate / raw, "batch_p50_s": p50, "batch_p99_s": p99}


def _batch_latency(url: str) -> tuple[float, float]:
    """Estimate p50/p99 of batch handling time from the batch consumer's histogram (bucket bounds)."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    buckets: list[tuple[float, float]] = []
    for line in text.splitlines():
        if line.startswith("hybridpool_batch_duration_seconds_bucket") and TOPIC in line:
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    buckets.sort()
    if not buckets or buckets[-1][1] == 0:
        return float("nan"), float("nan")
    total = buckets[-1][1]
    return (
        next(le for le, c in buckets if c >= 0.5 * total),
        next(le for le, c in buckets if c >= 0.99 * total),
    )


# ---- command line ---------------------------------------------------------------------------------------


@dataclass
class Args:
    """Parsed command line."""

    mode: str
    sites: int
    interval: float = 10.0
    seconds: float = 60.0
    warmup: float = 15.0
    readings_per_site: int = 4
    spacing: float = 600.0
    batch: int = 4000
    runs: int = 3
    profile: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def parse(argv: Sequence[str]) -> Args:
    """Parse the command line."""
    p = argparse.ArgumentParser(prog="python -m loadtests.telemetry", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    f = sub.add_parser("fleet", help="simulated fleet end to end")
    f.add_argument("--sites", type=int, default=2000)
    f.add_argument("--interval", type=float, default=10.0)
    f.add_argument("--seconds", type=float, default=30.0)
    f.add_argument("--warmup", type=float, default=15.0)
    t = sub.add_parser("throughput", help="drain pre-loaded readings with one telemetry process")
    t.add_argument("--sites", type=int, default=20_000)
    t.add_argument("--readings-per-site", type=int, default=4)
    t.add_argument("--spacing", type=float, default=600.0, help="seconds between a site's readings")
    t.add_argument("--batch", type=int, default=4000)
    t.add_argument("--runs", type=int, default=3, help="drains on fresh infrastructure; medians printed")
    t.add_argument("--profile", default="", help="write a cProfile of the first run's telemetry process")
    ns = p.parse_args(argv)
    return Args(**{k.replace("-", "_"): v for k, v in vars(ns).items()})


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Run the chosen load test and return its figures."""
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.mode == "fleet":
        return fleet(args.sites, args.interval, args.seconds, args.warmup)
    return throughput(args.sites, args.readings_per_site, args.spacing, args.batch, args.runs, args.profile)


if __name__ == "__main__":
    main()
