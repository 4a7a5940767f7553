"""The batch-fed lag histogram is exported exactly as prometheus_client's own Histogram."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from services.telemetry.metrics import BatchHistogram

BUCKETS = (0.01, 0.05, 1.0, 5.0)


def test_batch_histogram_exposes_what_observing_one_by_one_would() -> None:
    values = [0.0, 0.01, 0.011, 0.3, 1.0, 2.5, 400.0, 7.0, 0.05]
    one_by_one = CollectorRegistry()
    reference = Histogram("lag_seconds", "Lag.", buckets=BUCKETS, registry=one_by_one)
    for v in values:
        reference.observe(v)
    batched = CollectorRegistry()
    hist = BatchHistogram("lag_seconds", "Lag.", BUCKETS, batched)
    hist.observe_many(values[:4])
    hist.observe_many(values[4:])
    expected = [line for line in generate_latest(one_by_one).decode().splitlines() if "_created" not in line]
    assert generate_latest(batched).decode().splitlines() == expected
    assert 'lag_seconds_bucket{le="0.01"} 2.0' in expected  # a value on a bound counts in that bucket
