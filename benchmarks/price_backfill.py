"""How long a one-year 15-minute day-ahead backfill (DK1 + DK2) takes from replay files.

Generates the year as EDS-format JSON files (synthetic SAMPLE prices, one file per month), then times:
1. normalisation alone (parse + validate into DayAheadPriceIngested), median of --repeats runs;
2. the full backfill (read files, normalise, compare with Redis, publish to the broker, update Redis
   fingerprints and curves) on the real embedded broker and Redis;
3. the same backfill again, which must publish nothing (idempotent re-ingest).

Run: `python -m benchmarks.price_backfill [--days 365] [--repeats 3]`. KAFKA_BOOTSTRAP / REDIS_URL
point it at existing infrastructure; otherwise it starts the embedded broker and Redis itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

from hybridpool_cli.infra import create_topics, start_kafka, start_redis
from hybridpool_shared.timeutil import utc_now
from hybridpool_shared.topics import all_topics
from services.price_ingest.backfill import run_windows, standalone, windows
from services.price_ingest.domain.datasets import DAY_AHEAD_PRICES
from services.price_ingest.domain.normalise import Context, normalise
from services.price_ingest.domain.schedule import utc_range_of_days
from services.price_ingest.domain.synthetic import SampleMarket, sample_records
from services.price_ingest.settings import PriceIngestSettings

FIRST = date(2025, 10, 1)


def write_year(directory: Path, days: int) -> int:
    """Write `days` of 15-min DK1+DK2 DayAheadPrices as monthly EDS-format files; return the record count."""
    market, total, day = SampleMarket(seed=11), 0, FIRST
    last = FIRST + timedelta(days=days - 1)
    while day <= last:
        month_end = min(last, (day.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1))
        start, end = utc_range_of_days(day, month_end)
        records = list(sample_records(market, DAY_AHEAD_PRICES, start, end, ("DK1", "DK2")))
        body = {"total": len(records), "dataset": "DayAheadPrices", "records": records}
        (directory / f"DayAheadPrices_{day:%Y-%m}.json").write_text(json.dumps(body))
        total += len(records)
        day = month_end + timedelta(days=1)
    return total


def time_normalise(directory: Path, repeats: int) -> list[float]:
    """Time normalising every record of the files, repeats times."""
    records = [r for p in sorted(directory.glob("*.json")) for r in json.loads(p.read_text())["records"]]
    timings = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = normalise(DAY_AHEAD_PRICES, records, Context("bench", utc_now()))
        timings.append(time.perf_counter() - t0)
        if out.rejections or len(out.prices) != len(records):
            raise RuntimeError(f"benchmark data did not normalise cleanly: {out.rejections[:3]}")
    return timings


@contextlib.contextmanager
def infrastructure() -> Iterator[tuple[str, str]]:
    """Use KAFKA_BOOTSTRAP/REDIS_URL if set, else start the embedded broker and Redis."""
    if os.environ.get("KAFKA_BOOTSTRAP") and os.environ.get("REDIS_URL"):
        yield os.environ["KAFKA_BOOTSTRAP"], os.environ["REDIS_URL"]
        return
    with tempfile.TemporaryDirectory(prefix="hybridpool-bench-") as tmp:
        kafka, bootstrap = start_kafka(Path(tmp))
        redis, url = start_redis(Path(tmp))
        try:
            asyncio.run(create_topics(bootstrap, all_topics()))
            yield bootstrap, url
        finally:
            kafka.stop()
            redis.stop()


async def time_backfill(settings: PriceIngestSettings, days: int) -> tuple[float, int, int]:
    """Run one backfill of the generated range; return (seconds, published, unchanged)."""
    plan = windows("DayAheadPrices", FIRST, FIRST + timedelta(days=days - 1), settings.backfill_window_days)
    async with standalone(settings) as (ingestor, source):
        t0 = time.perf_counter()
        totals = await run_windows(ingestor, source, plan)
        return time.perf_counter() - t0, totals.published, totals.unchanged


def main() -> None:
    """Generate the year, time normalisation and two backfills, and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hybridpool-prices-") as tmp:
        directory = Path(tmp)
        t0 = time.perf_counter()
        count = write_year(directory, args.days)
        print(f"generated {count} records ({args.days} days x DK1+DK2) in {time.perf_counter() - t0:.1f} s")
        norm = time_normalise(directory, args.repeats)
        med = statistics.median(norm)
        print(f"normalise only: median {med:.2f} s over {args.repeats} runs ({count / med:,.0f} records/s)")
        with infrastructure() as (bootstrap, redis_url):
            settings = PriceIngestSettings(
                kafka_bootstrap=bootstrap,
                redis_url=redis_url,
                source="replay",
                replay_dir=directory,
                redis_namespace=f"bench-{uuid.uuid4().hex[:8]}:",
                backfill_window_days=31,
            )
            first, published, _ = asyncio.run(time_backfill(settings, args.days))
            print(f"backfill (normalise + publish + Redis): {first:.1f} s, {published} published, "
                  f"{published / first:,.0f} records/s")  # fmt: skip
            again, republished, unchanged = asyncio.run(time_backfill(settings, args.days))
            print(f"re-run (idempotent): {again:.1f} s, {republished} published, {unchanged} unchanged; "
                  f"ratio first/re-run {first / again:.1f}x")  # fmt: skip


if __name__ == "__main__":
    main()
