"""When to fetch what: day-ahead after publication, and what a complete day looks like."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from hybridpool_shared.timeutil import COPENHAGEN, local_day_bounds


def local_today(now: datetime) -> date:
    """Return the Copenhagen calendar date at an aware instant."""
    return now.astimezone(COPENHAGEN).date()


def publication_instant(day: date, publish_at: time) -> datetime:
    """Return the UTC instant, on local day `day`, at which next-day prices are expected."""
    return datetime.combine(day, publish_at, tzinfo=COPENHAGEN).astimezone(UTC)


def day_ahead_days_due(now: datetime, publish_at: time) -> list[date]:
    """Return the delivery days whose prices should exist now: today, and tomorrow once published."""
    today = local_today(now)
    due = [today]
    if now >= publication_instant(today, publish_at):
        due.append(today + timedelta(days=1))
    return due


def seconds_until_next_publication(now: datetime, publish_at: time) -> float:
    """Return seconds from now until the next day-ahead publication instant."""
    today = local_today(now)
    nxt = publication_instant(today, publish_at)
    if now >= nxt:
        nxt = publication_instant(today + timedelta(days=1), publish_at)
    return (nxt - now).total_seconds()


def expected_intervals(day: date, minutes: int) -> int:
    """Return how many intervals of `minutes` a Copenhagen day holds (92/96/100 quarters, 23/24/25 h)."""
    start, end = local_day_bounds(day)
    return int((end - start) / timedelta(minutes=minutes))


def local_days(first: date, last: date) -> list[date]:
    """Return every local date from first to last, inclusive."""
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def utc_range_of_days(first: date, last: date) -> tuple[datetime, datetime]:
    """Return the UTC [start, end) covering local days first..last inclusive."""
    return local_day_bounds(first)[0], local_day_bounds(last)[1]


def split_by_local_day(start: datetime, end: datetime) -> list[tuple[date, datetime, datetime]]:
    """Split a UTC range at Copenhagen midnights: (local day, start, end) pieces."""
    pieces = []
    cursor = start
    while cursor < end:
        day = local_today(cursor)
        day_end = local_day_bounds(day)[1]
        pieces.append((day, cursor, min(end, day_end)))
        cursor = min(end, day_end)
    return pieces
