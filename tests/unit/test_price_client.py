"""The EDS client's retry rules and the scheduler's retry-until-complete, without a network."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta

import httpx
import pytest

from services.price_ingest.adapters.eds import ClientConfig, EdsClient, FetchError, retry_after_seconds
from services.price_ingest.domain.datasets import DATASETS, Dataset
from services.price_ingest.pipeline import IngestOptions, IngestResult
from services.price_ingest.scheduler import Scheduler
from services.price_ingest.settings import PriceIngestSettings

DA = DATASETS["DayAheadPrices"]
T0 = datetime(2025, 10, 1, tzinfo=UTC)
FAST = ClientConfig(base_url="http://eds.test", backoff_base_s=0.001, max_attempts=3)


def _client(handler, config: ClientConfig = FAST) -> tuple[EdsClient, Counter[str]]:  # type: ignore[no-untyped-def]
    errors: Counter[str] = Counter()
    client = EdsClient(
        config, transport=httpx.MockTransport(handler), on_error=lambda _d, kind: errors.update([kind])
    )
    return client, errors


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    now = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    assert retry_after_seconds("120", now, 1.0) == 120.0
    assert retry_after_seconds("Mon, 05 Jan 2026 12:00:30 GMT", now, 1.0) == 30.0
    assert retry_after_seconds("soon", now, 1.5) == 1.5
    assert retry_after_seconds(None, now, 2.0) == 2.0


async def test_request_carries_utc_bounds_filter_sort_and_paging() -> None:
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return httpx.Response(200, json={"total": 0, "records": []})

    client, _ = _client(handler)
    await client.fetch(DA, T0, T0 + timedelta(days=1), {"PriceArea": ["DK1", "DK2"]})
    params = seen[0].params
    assert seen[0].path == "/dataset/DayAheadPrices"
    assert (params["start"], params["end"], params["timezone"]) == (
        "2025-10-01T00:00",
        "2025-10-02T00:00",
        "UTC",
    )
    assert json.loads(params["filter"]) == {"PriceArea": ["DK1", "DK2"]}
    assert (params["sort"], params["offset"]) == ("TimeUTC asc", "0")


async def test_timeouts_are_retried_then_given_up() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    client, errors = _client(handler)
    with pytest.raises(FetchError, match="gave up after 3 attempts"):
        await client.fetch(DA, T0, T0 + timedelta(hours=1), {})
    assert errors["timeout"] == 3


async def test_client_errors_are_not_retried() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(400, text="bad filter")

    client, errors = _client(handler)
    with pytest.raises(FetchError, match="HTTP 400"):
        await client.fetch(DA, T0, T0 + timedelta(hours=1), {})
    assert (len(calls), errors["http_4xx"]) == (1, 1)


async def test_malformed_response_body_is_an_error() -> None:
    client, errors = _client(lambda _r: httpx.Response(200, json={"records": "nope"}))
    with pytest.raises(FetchError, match="malformed response"):
        await client.fetch(DA, T0, T0 + timedelta(hours=1), {})
    assert errors["bad_response"] == 1


async def test_retry_after_is_capped() -> None:
    answers = iter(
        [
            httpx.Response(429, headers={"Retry-After": "3600"}),
            httpx.Response(200, json={"total": 0, "records": []}),
        ]
    )
    config = ClientConfig(base_url="http://eds.test", max_retry_after_s=0.01)
    client, errors = _client(lambda _r: next(answers), config)
    assert await client.fetch(DA, T0, T0 + timedelta(hours=1), {}) == []
    assert errors["http_429"] == 1


class _FakeIngestor:
    """Answers ingest_range with a given number of valid quarters per area."""

    def __init__(self, per_area: list[int]) -> None:
        self.per_area = per_area
        self.options = IngestOptions()
        self.calls: list[tuple[str, datetime, datetime]] = []

    async def ingest_range(
        self, _source: object, dataset: Dataset, start: datetime, end: datetime
    ) -> IngestResult:
        self.calls.append((dataset.name, start, end))
        count = self.per_area.pop(0)
        return IngestResult(dataset.name, valid_by_area=Counter({"DK1": count, "DK2": count}))


async def test_day_ahead_is_retried_until_tomorrow_is_complete() -> None:
    now = datetime(2026, 1, 5, 12, 30, tzinfo=UTC)  # 13:30 Copenhagen: tomorrow is due
    fake = _FakeIngestor([96, 40, 96])
    settings = PriceIngestSettings(kafka_bootstrap="x", redis_url="redis://x", day_ahead_retry_s=90)
    scheduler = Scheduler(fake, object(), settings, clock=lambda: now, publish_at=time(13, 0))  # type: ignore[arg-type]
    assert await scheduler.day_ahead_once() == 90  # today complete, tomorrow only partly published
    assert scheduler.complete_days == {date(2026, 1, 5)}
    assert await scheduler.day_ahead_once() == 3600  # next publication is 23.5 h away: re-check hourly
    assert scheduler.complete_days == {date(2026, 1, 5), date(2026, 1, 6)}
    assert [c[0] for c in fake.calls] == ["DayAheadPrices"] * 3


async def test_requests_in_flight_never_exceed_the_concurrency_limit() -> None:
    in_flight, peak = 0, 0

    async def handler(_request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return httpx.Response(200, json={"total": 0, "records": []})

    config = ClientConfig(base_url="http://eds.test", max_concurrency=2)
    client = EdsClient(config, transport=httpx.MockTransport(handler))
    await asyncio.gather(*(client.fetch(DA, T0, T0 + timedelta(hours=1), {}) for _ in range(8)))
    assert peak == 2
