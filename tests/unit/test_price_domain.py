"""Price normalisation, upsert planning, schedules and replay shifting: pure logic."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest

from hybridpool_shared.messages import DayAheadPriceIngested, PriceDirection, ReservePriceIngested
from services.price_ingest.domain.datasets import DATASETS, plan_datasets
from services.price_ingest.domain.normalise import Context, normalise, parse_utc
from services.price_ingest.domain.schedule import (
    day_ahead_days_due,
    expected_intervals,
    seconds_until_next_publication,
    split_by_local_day,
)
from services.price_ingest.domain.shift import choose_sample_day, complete_days, index_by_local_day, shift_day
from services.price_ingest.domain.synthetic import SampleMarket, sample_records
from services.price_ingest.domain.upsert import Decision, decide, fingerprint, plan_upserts

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
CTX = Context(source="test", ingested_at=NOW)


def _da(
    t_utc: str, t_dk: str, area: str = "DK1", eur: object = 50.0, dkk: object = 373.0
) -> dict[str, object]:
    return {
        "TimeUTC": t_utc,
        "TimeDK": t_dk,
        "PriceArea": area,
        "DayAheadPriceEUR": eur,
        "DayAheadPriceDKK": dkk,
    }


def test_naive_utc_column_is_read_as_utc_and_offsets_are_converted() -> None:
    assert parse_utc("2025-10-26T00:45:00", "TimeUTC") == datetime(2025, 10, 26, 0, 45, tzinfo=UTC)
    assert parse_utc("2025-10-26T02:45:00+02:00", "TimeUTC") == datetime(2025, 10, 26, 0, 45, tzinfo=UTC)


def test_day_ahead_record_becomes_a_quarter_price_keyed_on_utc() -> None:
    out = normalise(DATASETS["DayAheadPrices"], [_da("2025-10-26T00:45:00", "2025-10-26T02:45:00")], CTX)
    (price,) = out.prices
    assert isinstance(price, DayAheadPriceIngested)
    assert price.interval_start == datetime(2025, 10, 26, 0, 45, tzinfo=UTC)
    assert price.interval_end - price.interval_start == timedelta(minutes=15)
    assert price.kafka_key() == b"DK1|spot|none|2025-10-26T00:45Z"
    assert (price.price_eur_per_mwh, price.price_dkk_per_mwh) == (50.0, 373.0)


def test_repeated_autumn_local_labels_stay_two_prices() -> None:
    records = [
        _da("2025-10-26T00:00:00", "2025-10-26T02:00:00", eur=10.0),
        _da("2025-10-26T01:00:00", "2025-10-26T02:00:00", eur=20.0),
    ]
    out = normalise(DATASETS["DayAheadPrices"], records, CTX)
    assert {p.kafka_key() for p in out.prices} == {
        b"DK1|spot|none|2025-10-26T00:00Z",
        b"DK1|spot|none|2025-10-26T01:00Z",
    }


def test_null_dkk_is_accepted_and_null_eur_is_rejected() -> None:
    out = normalise(
        DATASETS["DayAheadPrices"],
        [
            _da("2025-10-01T10:00:00", "x", dkk=None),
            _da("2025-10-01T10:15:00", "x", eur=None, dkk=None),
        ],
        CTX,
    )
    assert [p.price_dkk_per_mwh for p in out.prices] == [None]
    assert [(r.kind, r.key) for r in out.rejections] == [("null_value", b"DK1|spot|none|2025-10-01T10:15Z")]


@pytest.mark.parametrize(
    ("record", "kind"),
    [
        (_da("2025-10-01T10:00:00", "x", area="SE3"), "wrong_area"),
        (_da("2025-10-01T10:07:00", "x"), "misaligned"),
        (_da("yesterday", "x"), "bad_time"),
        (_da("2025-10-01T10:00:00", "x", eur="12"), "not_a_number"),
        (_da("2025-10-01T10:00:00", "x", eur=float("nan")), "not_a_number"),
    ],
)
def test_bad_records_are_rejected_with_a_reason(record: dict[str, object], kind: str) -> None:
    out = normalise(DATASETS["DayAheadPrices"], [record], CTX)
    assert out.prices == []
    assert [r.kind for r in out.rejections] == [kind]


def test_negative_prices_are_valid() -> None:
    out = normalise(DATASETS["DayAheadPrices"], [_da("2025-10-01T10:00:00", "x", eur=-12.5, dkk=-93.3)], CTX)
    assert out.prices[0].price_eur_per_mwh == -12.5


def test_hourly_history_expands_to_flagged_quarters_on_request() -> None:
    record = {"HourUTC": "2025-09-30T21:00:00", "HourDK": "2025-09-30T23:00:00", "PriceArea": "DK2",
              "SpotPriceDKK": 690.25, "SpotPriceEUR": 92.48}  # fmt: skip
    hourly = normalise(DATASETS["Elspotprices"], [record], CTX).prices
    expanded = normalise(DATASETS["Elspotprices"], [record], Context("t", NOW, expand_hourly=True)).prices
    assert [(p.interval_minutes, p.expanded_from_hourly) for p in hourly] == [(60, False)]
    assert [p.interval_start.minute for p in expanded] == [0, 15, 30, 45]
    assert all(p.expanded_from_hourly and p.interval_minutes == 15 for p in expanded)


def test_fcr_nd_products_and_directions() -> None:
    rows = [
        {"HourUTC": "2026-09-15T21:00:00", "HourDK": "x", "PriceArea": "DK2", "ProductName": name,
         "AuctionType": auction, "PurchasedVolumeLocal": 4.6, "PriceTotalEUR": 24.0}
        for name, auction in (("FCR-N", "Total"), ("FCR-D upp", "Total"), ("FCR-D ned", "D-1 early"))
    ]  # fmt: skip
    rows.append({**rows[0], "ProductName": "FFR"})
    out = normalise(DATASETS["FcrNdDK2"], rows, CTX)
    got = [(p.product, p.direction) for p in out.prices]
    assert got == [
        ("fcr_n", PriceDirection.SYMMETRIC),
        ("fcr_d_up", PriceDirection.UP),
        ("fcr_d_down_d-1_early", PriceDirection.DOWN),
    ]
    assert isinstance(out.prices[0], ReservePriceIngested)
    assert out.prices[0].price_eur_per_mw_per_h == 24.0
    assert out.prices[0].volume_mw == 4.6
    assert [r.kind for r in out.rejections] == ["unknown_product"]


def test_capacity_record_gives_up_and_down_prices_per_mw_per_hour() -> None:
    row = {"TimeUTC": "2026-09-15T21:00:00", "TimeDK": "x", "PriceArea": "DK1", "UpProcuredMW": 390.0,
           "UpPriceEUR": 2.01, "UpPriceDKK": 15.03, "DownProcuredMW": 3.0, "DownPriceEUR": 0.11,
           "DownPriceDKK": None}  # fmt: skip
    out = normalise(DATASETS["MfrrCapacityMarket"], [row], CTX)
    assert [(p.direction, p.price_eur_per_mw_per_h) for p in out.prices] == [("up", 2.01), ("down", 0.11)]  # type: ignore[union-attr]
    assert out.prices[0].interval_minutes == 60


def test_upsert_plan_publishes_new_and_changed_values_once() -> None:
    a = _price(10.0)
    b = _price(11.0)
    assert decide(None, fingerprint(a)) is Decision.NEW
    assert decide(fingerprint(a), fingerprint(a.model_copy(update={"source": "other"}))) is Decision.UNCHANGED
    key = a.kafka_key()
    plan = plan_upserts([(key, fingerprint(a)), (key, fingerprint(a)), (key, fingerprint(b))], {})
    assert [(k, c) for k, _, c in plan.publish] == [(key, False), (key, True)]
    assert (plan.unchanged, plan.corrected) == (1, 1)
    rerun = plan_upserts([(key, fingerprint(a)), (key, fingerprint(b))], {key: fingerprint(b)})
    assert rerun.publish == []
    again = plan_upserts([(key, fingerprint(b))], {key: fingerprint(b)})
    assert again.publish == []
    assert again.unchanged == 1


def _price(eur: float) -> DayAheadPriceIngested:
    start = datetime(2025, 10, 1, tzinfo=UTC)
    return DayAheadPriceIngested(
        area="DK1", interval_start=start, interval_end=start + timedelta(minutes=15), interval_minutes=15,
        price_eur_per_mwh=eur, source="t", ingested_at=NOW,
    )  # fmt: skip


def test_copenhagen_days_have_92_96_100_quarters() -> None:
    assert [expected_intervals(d, 15) for d in (date(2026, 3, 29), date(2026, 1, 5), date(2025, 10, 26))] == [
        92,
        96,
        100,
    ]
    assert expected_intervals(date(2025, 3, 30), 60) == 23


def test_day_ahead_is_due_for_tomorrow_only_after_publication() -> None:
    before = datetime(2026, 1, 5, 11, 30, tzinfo=UTC)  # 12:30 Copenhagen
    after = datetime(2026, 1, 5, 12, 5, tzinfo=UTC)  # 13:05 Copenhagen
    assert day_ahead_days_due(before, time(13, 0)) == [date(2026, 1, 5)]
    assert day_ahead_days_due(after, time(13, 0)) == [date(2026, 1, 5), date(2026, 1, 6)]
    assert seconds_until_next_publication(before, time(13, 0)) == 30 * 60
    assert seconds_until_next_publication(after, time(13, 0)) == pytest.approx(24 * 3600 - 5 * 60)


def test_ranges_split_at_local_midnight() -> None:
    pieces = split_by_local_day(datetime(2026, 1, 5, 20, tzinfo=UTC), datetime(2026, 1, 6, 2, tzinfo=UTC))
    assert [(d, s.hour, e.hour) for d, s, e in pieces] == [
        (date(2026, 1, 5), 20, 23),
        (date(2026, 1, 6), 23, 2),
    ]


def test_dataset_aliases_split_at_the_quarter_hour_switch() -> None:
    plan = plan_datasets("day_ahead", datetime(2025, 9, 30, tzinfo=UTC), datetime(2025, 10, 2, tzinfo=UTC))
    assert [(d.name, s.isoformat(), e.isoformat()) for d, s, e in plan] == [
        ("Elspotprices", "2025-09-30T00:00:00+00:00", "2025-09-30T22:00:00+00:00"),
        ("DayAheadPrices", "2025-09-30T22:00:00+00:00", "2025-10-02T00:00:00+00:00"),
    ]
    with pytest.raises(ValueError, match="unknown dataset"):
        plan_datasets("Nope", NOW, NOW)


@pytest.mark.parametrize(
    ("target", "count"), [(date(2026, 3, 29), 92), (date(2025, 10, 26), 100), (date(2026, 11, 23), 96)]
)
def test_shifting_a_sample_day_fills_every_quarter_of_the_target_day(target: date, count: int) -> None:
    dataset = DATASETS["DayAheadPrices"]
    start = datetime(2026, 1, 11, 23, tzinfo=UTC)
    records = list(sample_records(SampleMarket(), dataset, start, start + timedelta(days=1), ("DK1", "DK2")))
    days = index_by_local_day(dataset, records)
    assert complete_days(dataset, days) == [date(2026, 1, 12)]
    shifted = shift_day(dataset, days[date(2026, 1, 12)], target)
    out = normalise(dataset, shifted, CTX)
    assert out.rejections == []
    assert len({p.kafka_key() for p in out.prices if p.area == "DK1"}) == count


def test_sample_day_matches_the_target_days_length_before_its_weekday() -> None:
    samples = [date(2026, 3, 29), date(2026, 1, 18), date(2026, 1, 14), date(2025, 10, 26)]
    assert choose_sample_day(date(2026, 11, 22), samples) == date(2026, 1, 18)  # a 96-quarter Sunday
    assert choose_sample_day(date(2027, 3, 28), samples) == date(2026, 3, 29)  # spring DST day
    assert choose_sample_day(date(2026, 10, 25), samples) == date(2025, 10, 26)  # autumn DST day
    assert choose_sample_day(date(2026, 11, 25), samples) == date(2026, 1, 14)  # a Wednesday
