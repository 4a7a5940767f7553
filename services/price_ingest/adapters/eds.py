"""A typed async client for Energi Data Service: paging, rate limits, retries, bounded concurrency."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.price_ingest.domain.datasets import Dataset

LOGGER = logging.getLogger(__name__)
ErrorHook = Callable[[str, str], None]


class EdsResponse(BaseModel):
    """The body of `GET /dataset/{name}`: a total row count and one page of records."""

    model_config = ConfigDict(extra="allow")

    total: int = Field(ge=0)
    records: list[Any]


class FetchError(RuntimeError):
    """A fetch failed for good (retries exhausted, a 4xx, or a malformed response)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class ClientConfig:
    """Tuning of the client; the base URL is a setting so tests and mirrors can point elsewhere."""

    base_url: str = "https://api.energidataservice.dk"
    timeout_s: float = 30.0
    max_concurrency: int = 4
    page_size: int = 10_000
    max_attempts: int = 6
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    max_retry_after_s: float = 300.0


def _fmt(instant: datetime) -> str:
    return instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


def retry_after_seconds(header: str | None, now: datetime, default: float) -> float:
    """Return the wait a Retry-After header asks for (seconds or an HTTP date), else default."""
    if not header:
        return default
    try:
        return max(0.0, float(header))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return default
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


@dataclass(frozen=True)
class _Retry:
    reason: str
    wait_s: float


class EdsClient:
    """Fetch every record of a dataset over a UTC range, page by page."""

    def __init__(
        self,
        config: ClientConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        on_error: ErrorHook | None = None,
    ) -> None:
        self.config = config
        self._http = httpx.AsyncClient(
            base_url=config.base_url, timeout=config.timeout_s, transport=transport
        )
        self._slots = asyncio.Semaphore(config.max_concurrency)
        self._on_error = on_error or (lambda _dataset, _kind: None)

    def label(self, dataset: Dataset, start: datetime) -> str:
        """Return the `source` of prices from the API: the dataset name."""
        return dataset.name

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._http.aclose()

    async def fetch(
        self, dataset: Dataset, start: datetime, end: datetime, filters: dict[str, list[str]]
    ) -> list[Any]:
        """Return all records of dataset with its UTC time column in [start, end), in time order."""
        params: dict[str, str | int] = {
            "start": _fmt(start),
            "end": _fmt(end),
            "timezone": "UTC",
            "sort": f"{dataset.time_column} asc",
            "limit": self.config.page_size,
        }
        if filters:
            params["filter"] = json.dumps(filters, separators=(",", ":"))
        records: list[Any] = []
        while True:
            page = await self._page(dataset.name, {**params, "offset": len(records)})
            records.extend(page.records)
            if not page.records or len(records) >= page.total:
                return records

    async def _page(self, name: str, params: dict[str, str | int]) -> EdsResponse:
        async with self._slots:
            response = await self._get_with_retries(name, params)
        try:
            return EdsResponse.model_validate_json(response.content)
        except ValidationError as exc:
            self._on_error(name, "bad_response")
            raise FetchError("bad_response", f"{name}: malformed response: {exc.errors()[:3]}") from exc

    async def _get_with_retries(self, name: str, params: dict[str, str | int]) -> httpx.Response:
        for attempt in range(1, self.config.max_attempts + 1):
            outcome = await self._try_once(name, params, attempt)
            if isinstance(outcome, httpx.Response):
                return outcome
            if attempt == self.config.max_attempts:
                break
            LOGGER.warning(
                "%s: %s, retrying in %.1f s (attempt %s)", name, outcome.reason, outcome.wait_s, attempt
            )
            await asyncio.sleep(outcome.wait_s)
        raise FetchError("retries_exhausted", f"{name}: gave up after {self.config.max_attempts} attempts")

    async def _try_once(
        self, name: str, params: dict[str, str | int], attempt: int
    ) -> httpx.Response | _Retry:
        try:
            response = await self._http.get(f"/dataset/{name}", params=params)
        except httpx.TimeoutException:
            return self._retry(name, "timeout", self._backoff(attempt))
        except httpx.TransportError:
            return self._retry(name, "connection", self._backoff(attempt))
        if response.status_code == 429:
            header = response.headers.get("Retry-After")
            wait = retry_after_seconds(header, datetime.now(UTC), self._backoff(attempt))
            return self._retry(name, "http_429", min(wait, self.config.max_retry_after_s))
        if response.status_code >= 500:
            return self._retry(name, "http_5xx", self._backoff(attempt))
        if response.status_code >= 400:
            self._on_error(name, "http_4xx")
            raise FetchError("http_4xx", f"{name}: HTTP {response.status_code}: {response.text[:300]}")
        return response

    def _retry(self, name: str, kind: str, wait_s: float) -> _Retry:
        self._on_error(name, kind)
        return _Retry(kind, wait_s)

    def _backoff(self, attempt: int) -> float:
        cap = float(min(self.config.backoff_max_s, self.config.backoff_base_s * 2.0 ** (attempt - 1)))
        jitter: float = random.uniform(0, cap / 2)
        return cap / 2 + jitter
