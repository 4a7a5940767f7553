"""Replay files in the API's JSON format and as CSV, and the bundled sample's coverage."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path

from services.price_ingest.adapters.replay import BUNDLED_SAMPLE, ReplayFiles, ShiftedReplay
from services.price_ingest.domain.datasets import DATASETS
from services.price_ingest.domain.normalise import Context, normalise
from services.price_ingest.domain.schedule import utc_range_of_days
from services.price_ingest.domain.shift import complete_days, index_by_local_day

CTX = Context("replay", datetime(2026, 1, 5, tzinfo=UTC))


async def test_csv_and_json_files_replay_the_same_records(tmp_path: Path) -> None:
    rows = [
        {"HourUTC": "2026-01-12T00:00:00", "HourDK": "2026-01-12T01:00:00", "FCRdomestic_MW": 6.0,
         "FCRdk_EUR": 9.05, "FCRdk_DKK": None},
        {"HourUTC": "2026-01-12T01:00:00", "HourDK": "2026-01-12T02:00:00", "FCRdomestic_MW": 6.0,
         "FCRdk_EUR": -1.5, "FCRdk_DKK": -11.19},
    ]  # fmt: skip
    (tmp_path / "FcrDK1_jan.csv").write_text(
        "HourUTC,HourDK,FCRdomestic_MW,FCRdk_EUR,FCRdk_DKK\n"
        "2026-01-12T00:00:00,2026-01-12T01:00:00,6.0,9.05,\n"
        "2026-01-12T01:00:00,2026-01-12T02:00:00,6.0,-1.5,-11.19\n"
    )
    json_dir = tmp_path / "json"
    json_dir.mkdir()
    (json_dir / "whatever.json").write_text(json.dumps({"total": 2, "dataset": "FcrDK1", "records": rows}))
    dataset = DATASETS["FcrDK1"]
    start, end = datetime(2026, 1, 12, tzinfo=UTC), datetime(2026, 1, 12, 1, tzinfo=UTC)
    from_csv = await ReplayFiles(tmp_path).fetch(dataset, start, end, {})
    from_json = await ReplayFiles(json_dir).fetch(dataset, start, end, {})
    assert from_csv == from_json == rows[:1]


def test_bundled_sample_covers_winter_dst_and_the_quarter_hour_switch() -> None:
    files = ReplayFiles(BUNDLED_SAMPLE)
    quarter = DATASETS["DayAheadPrices"]
    hourly = DATASETS["Elspotprices"]
    q_days = complete_days(quarter, index_by_local_day(quarter, files.records(quarter)))
    h_days = complete_days(hourly, index_by_local_day(hourly, files.records(hourly)))
    assert {date(2025, 10, 1), date(2025, 10, 26), date(2026, 3, 29)} <= set(q_days)
    assert {date(2025, 3, 30), date(2025, 9, 30)} <= set(h_days)
    assert len([d for d in q_days if date(2026, 1, 12) <= d <= date(2026, 1, 18)]) == 7
    for name in DATASETS:
        assert files.records(DATASETS[name]), f"no sample for {name}"
    size = sum(p.stat().st_size for p in BUNDLED_SAMPLE.glob("*.json"))
    assert size < 4_000_000


def test_bundled_sample_normalises_without_rejections() -> None:
    files = ReplayFiles(BUNDLED_SAMPLE)
    for dataset in DATASETS.values():
        out = normalise(dataset, files.records(dataset), CTX)
        assert out.rejections == [], dataset.name
    prices = normalise(DATASETS["DayAheadPrices"], files.records(DATASETS["DayAheadPrices"]), CTX).prices
    eur = [p.price_eur_per_mwh or 0.0 for p in prices]
    assert min(eur) < 0 < max(eur)  # negative prices occur
    assert max(eur) > 3 * sorted(eur)[len(eur) // 2]  # and spikes
    start, end = utc_range_of_days(date(2025, 10, 26), date(2025, 10, 26))
    assert Counter(p.area for p in prices if start <= p.interval_start < end) == {"DK1": 100, "DK2": 100}


async def test_shifted_replay_maps_sample_days_onto_today_and_flags_the_source() -> None:
    replay = ShiftedReplay(ReplayFiles(BUNDLED_SAMPLE))
    dataset = DATASETS["DayAheadPrices"]
    start, end = utc_range_of_days(date(2030, 10, 27), date(2030, 10, 27))  # an autumn DST Sunday
    records = await replay.fetch(dataset, start, end, {"PriceArea": ["DK1"]})
    assert replay.label(dataset, start) == "replay-shifted:DayAheadPrices:2025-10-26"
    out = normalise(dataset, records, CTX)
    assert out.rejections == []
    assert len(out.prices) == 100
    assert out.prices[0].interval_start == start
