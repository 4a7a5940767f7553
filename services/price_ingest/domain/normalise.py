"""Turn raw EDS records into strict price messages, or into rejections with a reason."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from hybridpool_shared.messages import (
    DayAheadPriceIngested,
    ImbalancePriceIngested,
    PriceDirection,
    ReservePriceIngested,
)
from services.price_ingest.domain.datasets import Dataset, Leg, Record, RecordRejectedError, TopicKind

PriceMessage = DayAheadPriceIngested | ImbalancePriceIngested | ReservePriceIngested
QUARTER = timedelta(minutes=15)


@dataclass(frozen=True)
class Rejection:
    """A record (or one price inside it) that failed validation, with the reason."""

    dataset: str
    kind: str
    reason: str
    record: Any = field(hash=False)
    key: bytes | None = None


@dataclass
class Normalised:
    """What a batch of records became: valid prices in input order, and rejections."""

    prices: list[PriceMessage] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


@dataclass(frozen=True)
class Context:
    """Everything normalisation needs besides the records."""

    source: str
    ingested_at: datetime
    areas: tuple[str, ...] = ("DK1", "DK2")
    expand_hourly: bool = False


def parse_utc(value: object, column: str) -> datetime:
    """Parse a *UTC column: naive ISO strings are UTC, offsets are converted to UTC."""
    if value is None:
        raise RecordRejectedError("null_value", f"{column} is null")
    if not isinstance(value, str):
        raise RecordRejectedError("bad_time", f"{column} is not an ISO timestamp: {value!r}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise RecordRejectedError("bad_time", f"{column} is not an ISO timestamp: {value!r}") from exc
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _number(record: Record, column: str, *, required: bool) -> float | None:
    value = record.get(column)
    if value is None:
        if required:
            raise RecordRejectedError("null_value", f"{column} is null where a price is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RecordRejectedError("not_a_number", f"{column} is not a finite number: {value!r}")
    return float(value)


def _area(dataset: Dataset, record: Record, areas: tuple[str, ...]) -> str:
    area = dataset.fixed_area or (record.get(dataset.area_column) if dataset.area_column else None)
    if area is None:
        raise RecordRejectedError("null_value", f"{dataset.area_column} is null")
    if area not in areas:
        raise RecordRejectedError("wrong_area", f"area {area!r} is not one of {', '.join(areas)}")
    return str(area)


def _start(dataset: Dataset, record: Record) -> datetime:
    start = parse_utc(record.get(dataset.time_column), dataset.time_column)
    if start.second or start.microsecond or start.minute % dataset.minutes:
        raise RecordRejectedError(
            "misaligned",
            f"{dataset.time_column} {start.isoformat()} is not on a {dataset.minutes}-min boundary",
        )
    return start


def _spans(start: datetime, minutes: int, expand: bool) -> list[tuple[datetime, int]]:
    if expand and minutes == 60:
        return [(start + i * QUARTER, 15) for i in range(4)]
    return [(start, minutes)]


def _fields(dataset: Dataset, leg: Leg, record: Record) -> dict[str, Any]:
    eur = _number(record, leg.eur_column, required=True)
    dkk = _number(record, leg.dkk_column, required=False) if leg.dkk_column else None
    if dataset.kind is TopicKind.RESERVE:
        volume = _number(record, leg.volume_column, required=False) if leg.volume_column else None
        return {"price_eur_per_mw_per_h": eur, "price_dkk_per_mw_per_h": dkk, "volume_mw": volume}
    return {"price_eur_per_mwh": eur, "price_dkk_per_mwh": dkk}


def _message(kind: TopicKind, **fields: Any) -> PriceMessage:
    if kind is TopicKind.DAY_AHEAD:
        return DayAheadPriceIngested(**fields)
    if kind is TopicKind.IMBALANCE:
        return ImbalancePriceIngested(**fields)
    return ReservePriceIngested(**fields)


def _key(area: str, leg: Leg, start: datetime) -> bytes:
    return f"{area}|{leg.product}|{leg.direction}|{start.strftime('%Y-%m-%dT%H:%MZ')}".encode()


def _leg_prices(
    dataset: Dataset, leg: Leg, record: Record, area: str, start: datetime, ctx: Context
) -> list[PriceMessage]:
    values = _fields(dataset, leg, record)
    return [
        _message(
            dataset.kind,
            area=area,
            product=leg.product,
            direction=PriceDirection(leg.direction),
            interval_start=span_start,
            interval_end=span_start + timedelta(minutes=minutes),
            interval_minutes=minutes,
            source=ctx.source,
            ingested_at=ctx.ingested_at,
            expanded_from_hourly=minutes != dataset.minutes,
            **values,
        )
        for span_start, minutes in _spans(start, dataset.minutes, ctx.expand_hourly)
    ]


def normalise_record(dataset: Dataset, record: Record, ctx: Context, out: Normalised) -> None:
    """Append the record's prices (one per leg and span) and any rejections to out."""
    try:
        start = _start(dataset, record)
        area = _area(dataset, record, ctx.areas)
        legs = dataset.legs(record)
    except RecordRejectedError as exc:
        out.rejections.append(Rejection(dataset.name, exc.kind, exc.reason, record))
        return
    for leg in legs:
        try:
            out.prices.extend(_leg_prices(dataset, leg, record, area, start, ctx))
        except RecordRejectedError as exc:
            out.rejections.append(
                Rejection(dataset.name, exc.kind, exc.reason, record, _key(area, leg, start))
            )
        except ValidationError as exc:
            reason = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}" for e in exc.errors()
            )
            out.rejections.append(
                Rejection(dataset.name, "validation", reason, record, _key(area, leg, start))
            )


def normalise(dataset: Dataset, records: Iterable[Record], ctx: Context) -> Normalised:
    """Normalise a batch of records of one dataset, keeping input order."""
    out = Normalised()
    for record in records:
        if not isinstance(record, dict):
            out.rejections.append(
                Rejection(dataset.name, "validation", "record is not a JSON object", record)
            )
            continue
        normalise_record(dataset, record, ctx, out)
    return out
