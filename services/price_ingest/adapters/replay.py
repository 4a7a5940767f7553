"""Replay sources: files in the EDS API's own JSON format (or CSV with the same columns).

A file belongs to a dataset by its JSON `dataset` field or, failing that, by its name starting
with the dataset name (e.g. `DayAheadPrices_2025-10.json`, `FcrDK1.csv`).
"""

from __future__ import annotations

import csv
import json
import logging
from bisect import bisect_left
from datetime import date, datetime
from pathlib import Path
from typing import Any

from services.price_ingest.domain.datasets import DATASETS, Dataset
from services.price_ingest.domain.normalise import parse_utc
from services.price_ingest.domain.schedule import local_today
from services.price_ingest.domain.shift import (
    SHIFTED_PREFIX,
    SampleDay,
    choose_sample_day,
    complete_days,
    index_by_local_day,
    shift_day,
    shifted_source,
)

LOGGER = logging.getLogger(__name__)
BUNDLED_SAMPLE = Path(__file__).resolve().parent.parent / "data"


def _csv_value(text: str) -> Any:
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return text


def read_csv(path: Path) -> list[dict[str, Any]]:
    """Read EDS records from a CSV with a header of column names; empty cells are null."""
    with path.open(newline="", encoding="utf-8") as handle:
        return [{k: _csv_value(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def _dataset_of(path: Path, body: Any) -> str | None:
    if isinstance(body, dict) and isinstance(body.get("dataset"), str):
        return str(body["dataset"])
    return next((name for name in DATASETS if path.name.startswith(name)), None)


def read_file(path: Path) -> tuple[str | None, list[Any]]:
    """Return (dataset name, records) of one replay file."""
    if path.suffix == ".csv":
        return _dataset_of(path, None), list(read_csv(path))
    body = json.loads(path.read_text(encoding="utf-8"))
    records = body.get("records", []) if isinstance(body, dict) else body
    return _dataset_of(path, body), list(records)


def _in_range(dataset: Dataset, record: Any, start: datetime, end: datetime) -> bool:
    try:
        return start <= parse_utc(record.get(dataset.time_column), dataset.time_column) < end
    except (ValueError, AttributeError):
        return True  # cannot be placed in time: let validation dead-letter it rather than drop it


def _matches(record: Any, filters: dict[str, list[str]]) -> bool:
    if not isinstance(record, dict):
        return True
    return all(record.get(col) in allowed for col, allowed in filters.items() if col in record)


class _TimeIndex:
    """A dataset's records sorted by their UTC start, for range look-ups; unplaceable ones apart."""

    def __init__(self, dataset: Dataset, records: list[Any]) -> None:
        placed: list[tuple[datetime, int, Any]] = []
        self.unplaced: list[Any] = []
        for i, record in enumerate(records):
            try:
                placed.append((parse_utc(record.get(dataset.time_column), dataset.time_column), i, record))
            except (ValueError, AttributeError):
                self.unplaced.append(record)
        placed.sort(key=lambda item: (item[0], item[1]))
        self.starts = [t for t, _, _ in placed]
        self.records = [r for _, _, r in placed]

    def between(self, start: datetime, end: datetime) -> list[Any]:
        """Return records with start <= time < end, then every record whose time cannot be read."""
        return self.records[bisect_left(self.starts, start) : bisect_left(self.starts, end)] + self.unplaced


class ReplayFiles:
    """All records of a directory of replay files, grouped by dataset and loaded once."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._by_dataset: dict[str, list[Any]] | None = None
        self._indexes: dict[str, _TimeIndex] = {}

    def records(self, dataset: Dataset) -> list[Any]:
        """Return every record of a dataset across the directory's files."""
        if self._by_dataset is None:
            self._by_dataset = self._load()
        return self._by_dataset.get(dataset.name, [])

    def _load(self) -> dict[str, list[Any]]:
        grouped: dict[str, list[Any]] = {}
        for path in sorted(self.directory.glob("*")):
            if path.suffix not in (".json", ".csv"):
                continue
            name, records = read_file(path)
            if name is None:
                LOGGER.warning("replay file %s names no known dataset; ignored", path.name)
                continue
            grouped.setdefault(name, []).extend(records)
        return grouped

    async def fetch(
        self, dataset: Dataset, start: datetime, end: datetime, filters: dict[str, list[str]]
    ) -> list[Any]:
        """Return the dataset's records in [start, end) that pass the filter, like the API would."""
        return [
            r for r in self.records(dataset) if _in_range(dataset, r, start, end) and _matches(r, filters)
        ]

    def label(self, dataset: Dataset, start: datetime) -> str:
        """Return the `source` of replayed prices: the dataset, marked as replay."""
        return f"replay:{dataset.name}"

    async def aclose(self) -> None:
        """Nothing to close; present so every source can be closed alike."""


class ShiftedReplay:
    """Sample days mapped onto real dates, so a replaying platform has prices for today and tomorrow.

    Fetch ranges must lie within one Copenhagen day (the scheduler asks day by day).
    """

    def __init__(self, files: ReplayFiles) -> None:
        self.files = files
        self._index: dict[str, dict[date, SampleDay]] = {}

    def _days(self, dataset: Dataset) -> dict[date, SampleDay]:
        if dataset.name not in self._index:
            self._index[dataset.name] = index_by_local_day(dataset, self.files.records(dataset))
        return self._index[dataset.name]

    def has(self, dataset: Dataset) -> bool:
        """Return whether the sample holds at least one complete day of the dataset."""
        return bool(complete_days(dataset, self._days(dataset)))

    def _sample_day(self, dataset: Dataset, start: datetime) -> date:
        return choose_sample_day(local_today(start), complete_days(dataset, self._days(dataset)))

    async def fetch(
        self, dataset: Dataset, start: datetime, end: datetime, filters: dict[str, list[str]]
    ) -> list[Any]:
        """Return the sample records re-dated onto start's local day, within [start, end)."""
        if not self.has(dataset):
            return []
        sample = self._sample_day(dataset, start)
        records = shift_day(dataset, self._days(dataset)[sample], local_today(start))
        return [r for r in records if _in_range(dataset, r, start, end) and _matches(r, filters)]

    def label(self, dataset: Dataset, start: datetime) -> str:
        """Return the `source` flagging shifted sample data, with the sample day it came from."""
        if not self.has(dataset):
            return f"{SHIFTED_PREFIX}:{dataset.name}"
        return shifted_source(dataset, self._sample_day(dataset, start))

    async def aclose(self) -> None:
        """Nothing to close."""
