"""Map recorded sample days onto other dates by local wall-clock time (replay "as if today")."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from hybridpool_shared.timeutil import COPENHAGEN, local_day_bounds
from services.price_ingest.domain.datasets import Dataset, Record
from services.price_ingest.domain.normalise import parse_utc
from services.price_ingest.domain.schedule import expected_intervals

SHIFTED_PREFIX = "replay-shifted"


def _wall(instant: datetime) -> tuple[date, int, int]:
    local = instant.astimezone(COPENHAGEN)
    return local.date(), local.hour * 60 + local.minute, local.fold


Slot = tuple[str, int, int]  # series (area/product), minute of the local day, DST fold
SampleDay = dict[Slot, Any]
_SERIES_COLUMNS = ("PriceArea", "ProductName", "AuctionType")


def _series(record: Record) -> str:
    return "|".join(str(record.get(c, "")) for c in _SERIES_COLUMNS)


def index_by_local_day(dataset: Dataset, records: Iterable[Record]) -> dict[date, SampleDay]:
    """Group records by local date, then by (series, minute of day, DST fold); bad times are skipped."""
    days: dict[date, SampleDay] = defaultdict(dict)
    for record in records:
        try:
            start = parse_utc(record.get(dataset.time_column), dataset.time_column)
        except ValueError:
            continue
        day, minute, fold = _wall(start)
        days[day][(_series(record), minute, fold)] = record
    return dict(days)


def complete_days(dataset: Dataset, days: dict[date, SampleDay]) -> list[date]:
    """Return the sample days that hold every interval of the day for each of their series."""
    complete = []
    for day, slots in days.items():
        series = {s for s, _, _ in slots}
        if series and len(slots) >= len(series) * expected_intervals(day, dataset.minutes):
            complete.append(day)
    return sorted(complete)


def choose_sample_day(target: date, candidates: Iterable[date]) -> date:
    """Pick a sample day of the same length (92/96/100 quarters) as the target, preferring its weekday."""
    ordered = sorted(candidates)
    if not ordered:
        raise ValueError("no sample days to replay from")
    length = expected_intervals(target, 15)
    same_length = [d for d in ordered if expected_intervals(d, 15) == length] or ordered
    same_weekday = [d for d in same_length if d.weekday() == target.weekday()]
    return (same_weekday or same_length)[-1]


def shift_day(dataset: Dataset, sample: SampleDay, target: date) -> list[dict[str, Any]]:
    """Return the sample day's records re-dated onto the target day's UTC intervals.

    Each target interval takes the sample record with the same local wall-clock time; the second
    pass through a repeated autumn hour falls back to the first when the sample has no repeat.
    """
    start, end = local_day_bounds(target)
    step = timedelta(minutes=dataset.minutes)
    series = sorted({s for s, _, _ in sample})
    out: list[dict[str, Any]] = []
    slot = start
    while slot < end:
        _, minute, fold = _wall(slot)
        for name in series:
            record = sample.get((name, minute, fold)) or sample.get((name, minute, 0))
            if record is not None:
                out.append(_redate(dataset, record, slot))
        slot += step
    return out


def _redate(dataset: Dataset, record: Record, slot: datetime) -> dict[str, Any]:
    moved = dict(record)
    moved[dataset.time_column] = slot.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    moved[dataset.local_column] = slot.astimezone(COPENHAGEN).strftime("%Y-%m-%dT%H:%M:%S")
    return moved


def shifted_source(dataset: Dataset, sample_day: date) -> str:
    """Return the `source` that flags prices as sample data moved onto another date."""
    return f"{SHIFTED_PREFIX}:{dataset.name}:{sample_day.isoformat()}"
