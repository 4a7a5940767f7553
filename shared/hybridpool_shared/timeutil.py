"""UTC time helpers: every timestamp in the platform is timezone-aware UTC."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

COPENHAGEN = ZoneInfo("Europe/Copenhagen")
QUARTER = timedelta(minutes=15)


def utc_now() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


def require_utc(value: datetime) -> datetime:
    """Return value converted to UTC; refuse naive datetimes."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("naive datetime: timestamps must carry a timezone (UTC)")
    return value.astimezone(UTC)


def floor_quarter(value: datetime) -> datetime:
    """Return the start of the UTC quarter-hour that contains value."""
    value = require_utc(value)
    return value.replace(minute=value.minute - value.minute % 15, second=0, microsecond=0)


def local_day_bounds(day: date, tz: ZoneInfo = COPENHAGEN) -> tuple[datetime, datetime]:
    """Return the UTC [start, end) of a local calendar day (23, 24 or 25 hours long)."""
    start = datetime(day.year, day.month, day.day, tzinfo=tz)
    end = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=tz)
    return start.astimezone(UTC), end.astimezone(UTC)


def quarters_in_local_day(day: date, tz: ZoneInfo = COPENHAGEN) -> list[datetime]:
    """Return the UTC start of every quarter-hour of a local day: 92, 96 or 100 of them."""
    start, end = local_day_bounds(day, tz)
    count = int((end - start) / QUARTER)
    return [start + i * QUARTER for i in range(count)]
