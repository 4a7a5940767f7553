"""A histogram observed a batch of values at a time, exported like prometheus_client's Histogram."""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector


class BatchHistogram(Collector):
    """Histogram without labels fed with observe_many(): Histogram.observe() costs a lock per value.

    The telemetry lag is observed for every site a batch wrote, thousands per batch.
    """

    def __init__(self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry):
        self.name = name
        self.documentation = documentation
        self.bounds = [float(b) for b in buckets if b != math.inf] + [math.inf]
        self.counts = [0] * len(self.bounds)
        self.total = 0.0
        self._lock = threading.Lock()  # collect() may run on the metrics server's thread
        registry.register(self)

    def observe_many(self, values: Iterable[float]) -> None:
        """Count each value in the first bucket whose upper bound it does not exceed."""
        counts = [0] * len(self.bounds)
        total = 0.0
        bounds = self.bounds
        for v in values:
            counts[bisect.bisect_left(bounds, v)] += 1
            total += v
        with self._lock:
            self.counts = [a + b for a, b in zip(self.counts, counts, strict=True)]
            self.total += total

    def collect(self) -> Iterator[Metric]:
        """Yield the cumulative buckets, count and sum."""
        with self._lock:
            counts, total = list(self.counts), self.total
        buckets, running = [], 0
        for bound, n in zip(self.bounds, counts, strict=True):
            running += n
            buckets.append(("+Inf" if bound == math.inf else repr(bound), float(running)))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=total)
