"""The message library refuses what would be wrong on the wire: naive times, bad intervals, extras."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from hybridpool_shared.messages import (
    BidSubmitted,
    DayAheadPriceIngested,
    Direction,
    ReserveProduct,
    SgReadyState,
    SwitchHeatPump,
)
from hybridpool_shared.timeutil import floor_quarter, quarters_in_local_day

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def _price(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "area": "DK1",
        "interval_start": T0.isoformat(),
        "interval_end": (T0 + timedelta(minutes=15)).isoformat(),
        "interval_minutes": 15,
        "price_eur_per_mwh": -3.5,
        "source": "DayAheadPrices",
        "ingested_at": T0.isoformat(),
    }
    base.update(overrides)
    return base


def test_valid_price_round_trips_through_json() -> None:
    price = DayAheadPriceIngested.model_validate(_price(), strict=False)
    again = DayAheadPriceIngested.from_json_bytes(price.to_json_bytes())
    assert again == price
    assert again.price_eur_per_mwh == -3.5  # negative prices are valid
    assert price.kafka_key() == b"DK1|spot|none|2026-01-05T12:00Z"


def test_naive_timestamp_is_refused() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        DayAheadPriceIngested.model_validate(_price(interval_start="2026-01-05T12:00:00"), strict=False)


def test_offset_timestamp_is_normalised_to_utc() -> None:
    cet = timezone(timedelta(hours=1))
    price = DayAheadPriceIngested.model_validate(
        _price(interval_start=T0.astimezone(cet).isoformat()), strict=False
    )
    assert price.interval_start.utcoffset() == timedelta(0)
    assert price.interval_start == T0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"interval_minutes": 60}, "is not 60 minutes long"),
        ({"interval_minutes": 7}, "must be 15, 60 or 240"),
        ({"price_eur_per_mwh": None}, "a price in EUR or DKK"),
        ({"area": "DK3"}, "String should match pattern"),
        ({"price_eur_per_kwh": 0.1}, "Extra inputs are not permitted"),
        ({"price_eur_per_mwh": "12"}, "Input should be a valid number"),
    ],
)
def test_bad_prices_are_refused_with_a_clear_reason(override: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        DayAheadPriceIngested.model_validate_json(json.dumps(_price(**override)))


def test_bid_capacity_must_be_in_tenths_of_a_megawatt() -> None:
    fields = {
        "bid_id": "b1",
        "area": "DK2",
        "product": ReserveProduct.FCR_N,
        "direction": Direction.SYMMETRIC,
        "interval_start": T0,
        "interval_end": T0 + timedelta(hours=1),
        "interval_minutes": 60,
        "price_eur_per_mw_per_h": 10.0,
        "submitted_at": T0,
    }
    assert BidSubmitted(capacity_mw=0.3, **fields).capacity_mw == 0.3  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=r"multiple of 0\.1"):
        BidSubmitted(capacity_mw=0.35, **fields)  # type: ignore[arg-type]


def test_a_block_command_may_not_exceed_two_hours() -> None:
    fields = {
        "command_id": "c1",
        "site_id": "s1",
        "seq": 1,
        "issued_at": T0,
        "sg_ready_state": SgReadyState.BLOCK,
    }
    SwitchHeatPump(valid_until=T0 + timedelta(hours=2), **fields)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="2 hours"):
        SwitchHeatPump(valid_until=T0 + timedelta(hours=2, seconds=1), **fields)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="after issued_at"):
        SwitchHeatPump(valid_until=T0, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("day", "quarters"),
    [(date(2026, 3, 29), 92), (date(2026, 6, 1), 96), (date(2026, 10, 25), 100)],
)
def test_copenhagen_days_have_92_96_or_100_quarters(day: date, quarters: int) -> None:
    starts = quarters_in_local_day(day)
    assert len(starts) == quarters
    assert all(b - a == timedelta(minutes=15) for a, b in itertools.pairwise(starts))
    assert starts[0].tzinfo is UTC


def test_floor_quarter() -> None:
    assert floor_quarter(datetime(2026, 1, 5, 12, 44, 59, tzinfo=UTC)) == datetime(
        2026, 1, 5, 12, 30, tzinfo=UTC
    )
    with pytest.raises(ValueError, match="naive"):
        floor_quarter(datetime(2026, 1, 5, 12, 44))  # noqa: DTZ001 - the point of the test
