"""The topic catalogue: every topic's name, key, model, retention and partitions, in one place."""

from __future__ import annotations

from dataclasses import dataclass

from hybridpool_shared.messages import (
    AuditRecorded,
    BalancePriceComputed,
    BidCleared,
    BidSubmitted,
    CommandAcknowledged,
    DayAheadPriceIngested,
    DeadLettered,
    FrequencyMeasured,
    ImbalancePriceIngested,
    Message,
    PoolActivated,
    QuarterAggregated,
    ReactionMeasured,
    ReservePriceIngested,
    SiteMasterDataChanged,
    SitePlanComputed,
    SitePoolMembershipChanged,
    SwitchHeatPump,
    TelemetryReported,
)

DAY_MS = 24 * 3600 * 1000
DLQ_SUFFIX = ".dlq"


@dataclass(frozen=True)
class TopicSpec:
    """One Kafka topic: what it carries and how it is kept."""

    name: str
    model: type[Message]
    key: str
    description: str
    partitions: int = 6
    compacted: bool = False
    retention_ms: int = 7 * DAY_MS

    @property
    def dlq(self) -> str:
        """Return the name of this topic's dead-letter topic."""
        return self.name + DLQ_SUFFIX

    def configs(self) -> dict[str, str]:
        """Return the topic-level configuration for creating it."""
        policy = "compact" if self.compacted else "delete"
        return {"cleanup.policy": policy, "retention.ms": str(self.retention_ms)}


def _topic(name: str, model: type[Message], key: str, description: str, **kw: object) -> TopicSpec:
    return TopicSpec(name=name, model=model, key=key, description=description, **kw)  # type: ignore[arg-type]


PRICES_DAY_AHEAD = _topic(
    "prices.day_ahead",
    DayAheadPriceIngested,
    "area|product|direction|start",
    "Day-ahead spot prices per area and interval (upserts).",
    compacted=True,
)
PRICES_IMBALANCE = _topic(
    "prices.imbalance",
    ImbalancePriceIngested,
    "area|product|direction|start",
    "Imbalance and mFRR energy prices per area and interval (upserts).",
    compacted=True,
)
PRICES_RESERVE = _topic(
    "prices.reserve",
    ReservePriceIngested,
    "area|product|direction|start",
    "Reserve capacity prices per area, product and interval (upserts).",
    compacted=True,
)
SITES_REGISTRY = _topic(
    "sites.registry",
    SiteMasterDataChanged,
    "site_id",
    "Site master data; the last record per site is its current state.",
    compacted=True,
)
AUDIT_LOG = _topic(
    "audit.log",
    AuditRecorded,
    "constant",
    "Hash-chained audit trail, one partition, kept long.",
    partitions=1,
    retention_ms=-1,
)
SITES_TELEMETRY = _topic(
    "sites.telemetry",
    TelemetryReported,
    "site_id",
    "Raw site readings.",
    partitions=12,
    retention_ms=2 * DAY_MS,
)
SITES_TELEMETRY_QUARTER = _topic(
    "sites.telemetry.quarter",
    QuarterAggregated,
    "site_id",
    "15-minute aggregates per site.",
    retention_ms=30 * DAY_MS,
)
SITES_BALANCE_PRICE = _topic(
    "sites.balance_price",
    BalancePriceComputed,
    "site_id|start",
    "Balance price per site and interval.",
    compacted=True,
)
POOL_PLAN = _topic(
    "pool.plan",
    SitePlanComputed,
    "site_id",
    "HP-or-gas plan per site and quarter-hour.",
    compacted=True,
)
POOL_MEMBERSHIP = _topic(
    "pool.membership",
    SitePoolMembershipChanged,
    "site_id",
    "Sites an operator took out of the pool or put back; the last record per site holds.",
    compacted=True,
)
MARKET_BIDS = _topic("market.bids", BidSubmitted, "bid_id", "Bids sent to the market.")
MARKET_RESULTS = _topic("market.results", BidCleared, "bid_id", "Clearing results per bid.")
MARKET_ACTIVATIONS = _topic(
    "market.activations", PoolActivated, "activation_id", "Activations of the pool by the TSO."
)
GRID_FREQUENCY = _topic(
    "grid.frequency",
    FrequencyMeasured,
    "area",
    "Grid frequency at 1 s.",
    partitions=1,
    retention_ms=DAY_MS,
)
DISPATCH_COMMANDS = _topic(
    "dispatch.commands",
    SwitchHeatPump,
    "site_id",
    "Commands to sites, with leases.",
    partitions=12,
)
DISPATCH_ACKS = _topic(
    "dispatch.acks", CommandAcknowledged, "site_id", "Sites' answers to commands.", partitions=12
)
DISPATCH_REACTIONS = _topic(
    "dispatch.reactions", ReactionMeasured, "site_id", "Measured reaction per command."
)

CATALOGUE: tuple[TopicSpec, ...] = (
    PRICES_DAY_AHEAD,
    PRICES_IMBALANCE,
    PRICES_RESERVE,
    SITES_REGISTRY,
    AUDIT_LOG,
    SITES_TELEMETRY,
    SITES_TELEMETRY_QUARTER,
    SITES_BALANCE_PRICE,
    POOL_PLAN,
    POOL_MEMBERSHIP,
    MARKET_BIDS,
    MARKET_RESULTS,
    MARKET_ACTIVATIONS,
    GRID_FREQUENCY,
    DISPATCH_COMMANDS,
    DISPATCH_ACKS,
    DISPATCH_REACTIONS,
)
BY_NAME: dict[str, TopicSpec] = {spec.name: spec for spec in CATALOGUE}


def dead_letter_spec(spec: TopicSpec) -> TopicSpec:
    """Return the spec of a topic's dead-letter topic."""
    return TopicSpec(
        name=spec.dlq,
        model=DeadLettered,
        key="source key",
        description=f"Messages from {spec.name} that could not be processed.",
        partitions=1,
        retention_ms=30 * DAY_MS,
    )


def all_topics() -> list[TopicSpec]:
    """Return every topic to create: the catalogue and one dead-letter topic each."""
    return [*CATALOGUE, *(dead_letter_spec(spec) for spec in CATALOGUE)]
