"""One strict pydantic model per topic; commands imperative, events past tense."""

from hybridpool_shared.messages.balance import BalancePriceComputed, HeatSource
from hybridpool_shared.messages.base import IntervalMessage, Message, UtcDatetime
from hybridpool_shared.messages.dispatch import (
    CommandAcknowledged,
    ReactionMeasured,
    SgReadyState,
    SwitchHeatPump,
)
from hybridpool_shared.messages.dlq import DeadLettered
from hybridpool_shared.messages.market import (
    BidCleared,
    BidSubmitted,
    Direction,
    FrequencyMeasured,
    PoolActivated,
    ReserveProduct,
    SitePlanComputed,
    SitePoolMembershipChanged,
)
from hybridpool_shared.messages.prices import (
    DayAheadPriceIngested,
    ImbalancePriceIngested,
    PriceDirection,
    ReservePriceIngested,
)
from hybridpool_shared.messages.registry import (
    AuditRecorded,
    ControlOption,
    SiteLocation,
    SiteMasterDataChanged,
)
from hybridpool_shared.messages.telemetry import (
    AggregateQuality,
    QuarterAggregated,
    TelemetryReported,
)

__all__ = [
    "AggregateQuality",
    "AuditRecorded",
    "BalancePriceComputed",
    "BidCleared",
    "BidSubmitted",
    "CommandAcknowledged",
    "ControlOption",
    "DayAheadPriceIngested",
    "DeadLettered",
    "Direction",
    "FrequencyMeasured",
    "HeatSource",
    "ImbalancePriceIngested",
    "IntervalMessage",
    "Message",
    "PoolActivated",
    "PriceDirection",
    "QuarterAggregated",
    "ReactionMeasured",
    "ReservePriceIngested",
    "ReserveProduct",
    "SgReadyState",
    "SiteLocation",
    "SiteMasterDataChanged",
    "SitePlanComputed",
    "SitePoolMembershipChanged",
    "SwitchHeatPump",
    "TelemetryReported",
    "UtcDatetime",
]
