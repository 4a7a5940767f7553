"""Price-ingest metrics, registered on the service's own registry."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge


class IngestMetrics:
    """Records per dataset and outcome, last success, errors by kind, and data freshness."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.records = Counter(
            "price_ingest_records_total",
            "Price records handled, by dataset and outcome (published/unchanged/corrected/rejected).",
            ["dataset", "outcome"],
            registry=registry,
        )
        self.last_success = Gauge(
            "price_ingest_last_success_timestamp_seconds",
            "Unix time of the last successful fetch of a dataset.",
            ["dataset"],
            registry=registry,
        )
        self.errors = Counter(
            "price_ingest_errors_total",
            "Fetch and validation errors by dataset and kind (http_429, http_5xx, timeout, null_value, ...).",
            ["dataset", "kind"],
            registry=registry,
        )
        self.latest_interval_end = Gauge(
            "price_ingest_latest_interval_end_timestamp_seconds",
            "Unix time of the end of the newest interval ingested, by dataset.",
            ["dataset"],
            registry=registry,
        )
        self.freshness = Gauge(
            "price_ingest_data_age_seconds",
            "Seconds since the last successful fetch of a dataset (refreshed periodically).",
            ["dataset"],
            registry=registry,
        )
        self._last: dict[str, float] = {}
        self._latest_end: dict[str, float] = {}

    def error(self, dataset: str, kind: str) -> None:
        """Count one error of a kind for a dataset."""
        self.errors.labels(dataset=dataset, kind=kind).inc()

    def succeeded(self, dataset: str, latest_end: float | None) -> None:
        """Record a successful fetch and the newest interval it held."""
        now = time.time()
        self._last[dataset] = now
        self.last_success.labels(dataset=dataset).set(now)
        self.freshness.labels(dataset=dataset).set(0)
        if latest_end is not None:
            self._latest_end[dataset] = max(self._latest_end.get(dataset, latest_end), latest_end)
            self.latest_interval_end.labels(dataset=dataset).set(self._latest_end[dataset])

    def refresh_freshness(self) -> None:
        """Update the data-age gauges from the last success times."""
        now = time.time()
        for dataset, last in self._last.items():
            self.freshness.labels(dataset=dataset).set(now - last)
