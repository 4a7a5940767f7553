"""CPU per reading of the telemetry service's in-memory work, without broker or Redis.

Replays the load test's readings (`loadtests.telemetry.readings`: each site its own phase, the given
spacing) through what one telemetry process does per batch besides I/O: strict parsing with the topic's
model, the pipeline's `_prepare` (checks, live state, open quarters, state documents, quarter updates)
against a store that holds nothing, and the JSON of the quarters it closed. The drain in the load test
moves by ±30 % with the machine; this figure is CPU only and steadier, so changes to the hot path are
compared here first. Prints the median µs per reading of --repeats replays, by stage.

Run: `python -m benchmarks.telemetry_prepare [--sites 100000] [--readings-per-site 2] [--spacing 600]`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import ConsumerRecord

from hybridpool_shared import topics
from hybridpool_shared.runtime import build_service
from loadtests.telemetry import readings
from services.telemetry.adapters import LoadedSites
from services.telemetry.app import tune_gc
from services.telemetry.loading import SiteLoader
from services.telemetry.pipeline import TelemetryPipeline
from services.telemetry.settings import TelemetrySettings

BATCH = 4000


class _EmptyStore:
    """Redis as the load test starts it: no site known yet."""

    async def load_sites(self, site_ids: Sequence[str]) -> LoadedSites:
        return LoadedSites(site_ids=set(site_ids))


def _records(sites: int, per_site: int, spacing_s: float, now: float) -> list[ConsumerRecord[bytes, bytes]]:
    topic = topics.SITES_TELEMETRY.name
    return [
        ConsumerRecord(topic, 0, n, 0, 0, key, value, None, len(key), len(value), [])
        for n, (key, value) in enumerate(readings(sites, per_site, spacing_s, now))
    ]


async def _replay(records: list[ConsumerRecord[bytes, bytes]], now: float) -> dict[str, float]:
    """Return the seconds each stage took over all records, and the quarters closed."""
    settings = TelemetrySettings(kafka_bootstrap="127.0.0.1:9", redis_url="redis://127.0.0.1:9/0")
    service = build_service("telemetry", settings, consumes=(topics.SITES_TELEMETRY,), produces=())
    pipeline = TelemetryPipeline(service, settings)
    pipeline.loader = SiteLoader(_EmptyStore())  # type: ignore[arg-type]
    validate = topics.SITES_TELEMETRY.model.__pydantic_validator__.validate_json
    spent = {"parse": 0.0, "prepare": 0.0, "quarter_json": 0.0, "quarters": 0.0}
    for start in range(0, len(records), BATCH):
        batch = records[start : start + BATCH]
        t0 = time.process_time()
        items: list[tuple[Any, ConsumerRecord[bytes, bytes]]] = [(validate(r.value), r) for r in batch]
        t1 = time.process_time()
        work = await pipeline._prepare(items, list(dict.fromkeys(m.site_id for m, _ in items)))
        t2 = time.process_time()
        for quarter in work.closed:
            quarter.to_json_bytes()
        t3 = time.process_time()
        spent["parse"] += t1 - t0
        spent["prepare"] += t2 - t1
        spent["quarter_json"] += t3 - t2
        spent["quarters"] += len(work.closed)
    return spent


def main(argv: Sequence[str] | None = None) -> None:
    """Replay --repeats times and print the median µs per reading by stage."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=100_000)
    ap.add_argument("--readings-per-site", type=int, default=2)
    ap.add_argument("--spacing", type=float, default=600.0, help="seconds between a site's readings")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    now = time.time()
    records = _records(args.sites, args.readings_per_site, args.spacing, now)
    tune_gc(TelemetrySettings.model_fields["gc_gen0_threshold"].default)  # as the service runs
    runs = []
    for _ in range(args.repeats):
        runs.append(asyncio.run(_replay(records, now)))
        gc.collect()
    n = len(records)
    print(
        f"telemetry in-memory replay: {args.sites} sites × {args.readings_per_site} readings, "
        f"{args.spacing:g} s apart; {runs[0]['quarters']:.0f} quarters closed; median of {args.repeats}"
    )
    stages = ("parse", "prepare", "quarter_json")
    for stage in stages:
        values = [r[stage] / n * 1e6 for r in runs]
        spread = f"runs {min(values):.2f}–{max(values):.2f}"
        print(f"  {stage:<13} {statistics.median(values):6.2f} µs per reading ({spread})")
    totals = [sum(r[s] for s in stages) / n * 1e6 for r in runs]
    total = statistics.median(totals)
    print(f"  {'total':<13} {total:6.2f} µs per reading = {1e6 / total:,.0f} readings/s of one core's CPU")


if __name__ == "__main__":
    main()
