"""Prometheus helpers: one registry per service with the platform's own counters."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge


@dataclass
class ServiceMetrics:
    """Counters every consumer shares; services add their own to the same registry."""

    service: str
    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(auto_describe=True))

    def __post_init__(self) -> None:
        self.dead_letters = Counter(
            "hybridpool_dead_letters_total",
            "Messages parked on a dead-letter topic.",
            ["topic", "reason"],
            registry=self.registry,
        )
        self.processed = Counter(
            "hybridpool_messages_processed_total",
            "Messages handled successfully.",
            ["topic"],
            registry=self.registry,
        )
        self.retries = Counter(
            "hybridpool_message_retries_total",
            "Transient handler failures that led to redelivery.",
            ["topic"],
            registry=self.registry,
        )
        self.up = Gauge(
            "hybridpool_service_up",
            "1 while the service runs.",
            ["service"],
            registry=self.registry,
        )
        self.up.labels(service=self.service).set(1)
