"""Prometheus metrics of dispatch: reaction seconds per phase, command counters, capacity gauges."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PHASE_BUCKETS_S = (1, 2, 5, 10, 20, 30, 45, 60, 90, 120, 180, 240, 300, 450, 600, 780, 900, 1200)


class DispatchMetrics:
    """The service's own metrics on its registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.reaction_seconds = Histogram(
            "hybridpool_dispatch_reaction_seconds",
            "Seconds from sending a command to each reaction phase.",
            ["phase"],
            buckets=PHASE_BUCKETS_S,
            registry=registry,
        )
        self.commands = Counter(
            "hybridpool_dispatch_commands_total",
            "Commands by event: sent, acked, rejected, expired, resent, refused (safety).",
            ["event"],
            registry=registry,
        )
        self.capacity_kw = Gauge(
            "hybridpool_dispatch_capacity_available_kw",
            "Pool capacity that could be switched now, by direction.",
            ["direction"],
            registry=registry,
        )
        self.activations_active = Gauge(
            "hybridpool_dispatch_activations_active", "Activations being served.", registry=registry
        )
        self.log_dropped = Counter(
            "hybridpool_dispatch_log_entries_dropped",
            "Command-log entries dropped after Redis refused them for too long.",
            registry=registry,
        )
        for event in ("sent", "acked", "rejected", "expired", "resent", "refused"):
            self.commands.labels(event=event)
