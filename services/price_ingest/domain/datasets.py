"""The Energi Data Service datasets this service reads, and how each record splits into prices.

Column names follow the project reference notes on Energi Data Service (from EDS metadata and public
client code).
Assumptions where the sources are thin, kept here so they are easy to revisit:
- MfrrEnergyActivationMarket: the scheduled-activation marginal prices (mFRRSAUpEUR / mFRRSADownEUR)
  are the mFRR energy prices; the dataset has no DKK columns.
- FcrDK1: the Danish price (FCRdk_EUR / FCRdk_DKK) and domestic volume (FCRdomestic_MW) are used,
  hourly rows as published (the 4-hour block structure is kept by the values themselves).
- FcrNdDK2: the price is the same for all areas; the DK2 row is used. A non-"Total" auction type
  is kept as its own product (e.g. fcr_n_d-1_early) so it never overwrites the Total price.
- RegulatingBalancePowerdata's BalancingPowerPriceUp/Down are the hourly mFRR energy history.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from hybridpool_shared.messages import PriceDirection

Record = Mapping[str, Any]


class TopicKind(StrEnum):
    """Which price topic a dataset feeds."""

    DAY_AHEAD = "day_ahead"
    IMBALANCE = "imbalance"
    RESERVE = "reserve"


class RecordRejectedError(ValueError):
    """A record cannot become a price; kind is a short machine-readable reason."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


@dataclass(frozen=True)
class Leg:
    """One price inside a record: product, direction, and the columns holding it."""

    product: str
    direction: PriceDirection
    eur_column: str
    dkk_column: str | None = None
    volume_column: str | None = None


LegsOf = Callable[[Record], tuple[Leg, ...]]


def _fixed(*legs: Leg) -> LegsOf:
    def legs_of(_: Record) -> tuple[Leg, ...]:
        return legs

    return legs_of


_FCR_ND_PRODUCTS: dict[str, tuple[str, PriceDirection]] = {
    "FCR-N": ("fcr_n", PriceDirection.SYMMETRIC),
    "FCR-D upp": ("fcr_d_up", PriceDirection.UP),
    "FCR-D ned": ("fcr_d_down", PriceDirection.DOWN),
}


def _fcr_nd_legs(record: Record) -> tuple[Leg, ...]:
    name = record.get("ProductName")
    if name not in _FCR_ND_PRODUCTS:
        raise RecordRejectedError("unknown_product", f"ProductName {name!r} is not FCR-N/FCR-D upp/ned")
    product, direction = _FCR_ND_PRODUCTS[name]
    auction = record.get("AuctionType")
    if not isinstance(auction, str) or not auction:
        raise RecordRejectedError("null_value", "AuctionType is required")
    if auction != "Total":
        product = f"{product}_{auction.lower().replace(' ', '_')}"
    return (Leg(product, direction, "PriceTotalEUR", None, "PurchasedVolumeLocal"),)


def _capacity_legs(product: str) -> LegsOf:
    return _fixed(
        Leg(product, PriceDirection.UP, "UpPriceEUR", "UpPriceDKK", "UpProcuredMW"),
        Leg(product, PriceDirection.DOWN, "DownPriceEUR", "DownPriceDKK", "DownProcuredMW"),
    )


@dataclass(frozen=True)
class Dataset:
    """An EDS dataset: its topic, UTC and local time columns, native resolution and price legs."""

    name: str
    kind: TopicKind
    time_column: str
    local_column: str
    minutes: int
    legs: LegsOf = field(compare=False)
    area_column: str | None = "PriceArea"
    fixed_area: str | None = None
    auction_filter: bool = False

    def request_filter(self, areas: tuple[str, ...], auction_types: tuple[str, ...]) -> dict[str, list[str]]:
        """Return the EDS `filter` for this dataset (areas, and auction types where relevant)."""
        result: dict[str, list[str]] = {}
        if self.area_column:
            result[self.area_column] = list(areas)
        if self.auction_filter:
            result["AuctionType"] = list(auction_types)
        return result


DAY_AHEAD_PRICES = Dataset(
    "DayAheadPrices",
    TopicKind.DAY_AHEAD,
    "TimeUTC",
    "TimeDK",
    15,
    _fixed(Leg("spot", PriceDirection.NONE, "DayAheadPriceEUR", "DayAheadPriceDKK")),
)
ELSPOT_PRICES = Dataset(
    "Elspotprices",
    TopicKind.DAY_AHEAD,
    "HourUTC",
    "HourDK",
    60,
    _fixed(Leg("spot", PriceDirection.NONE, "SpotPriceEUR", "SpotPriceDKK")),
)
IMBALANCE_PRICE = Dataset(
    "ImbalancePrice",
    TopicKind.IMBALANCE,
    "TimeUTC",
    "TimeDK",
    15,
    _fixed(Leg("imbalance", PriceDirection.NONE, "ImbalancePriceEUR", "ImbalancePriceDKK")),
)
MFRR_ENERGY = Dataset(
    "MfrrEnergyActivationMarket",
    TopicKind.IMBALANCE,
    "TimeUTC",
    "TimeDK",
    15,
    _fixed(
        Leg("mfrr_energy", PriceDirection.UP, "mFRRSAUpEUR"),
        Leg("mfrr_energy", PriceDirection.DOWN, "mFRRSADownEUR"),
    ),
)
REGULATING_BALANCE = Dataset(
    "RegulatingBalancePowerdata",
    TopicKind.IMBALANCE,
    "HourUTC",
    "HourDK",
    60,
    _fixed(
        Leg("imbalance", PriceDirection.NONE, "ImbalancePriceEUR", "ImbalancePriceDKK"),
        Leg("mfrr_energy", PriceDirection.UP, "BalancingPowerPriceUpEUR", "BalancingPowerPriceUpDKK"),
        Leg("mfrr_energy", PriceDirection.DOWN, "BalancingPowerPriceDownEUR", "BalancingPowerPriceDownDKK"),
    ),
)
FCR_ND_DK2 = Dataset(
    "FcrNdDK2", TopicKind.RESERVE, "HourUTC", "HourDK", 60, _fcr_nd_legs, auction_filter=True
)
FCR_DK1 = Dataset(
    "FcrDK1",
    TopicKind.RESERVE,
    "HourUTC",
    "HourDK",
    60,
    _fixed(Leg("fcr_dk1", PriceDirection.SYMMETRIC, "FCRdk_EUR", "FCRdk_DKK", "FCRdomestic_MW")),
    area_column=None,
    fixed_area="DK1",
)
MFRR_CAPACITY = Dataset(
    "MfrrCapacityMarket", TopicKind.RESERVE, "TimeUTC", "TimeDK", 60, _capacity_legs("mfrr_capacity")
)
AFRR_CAPACITY = Dataset(
    "AfrrReservesNordic", TopicKind.RESERVE, "TimeUTC", "TimeDK", 60, _capacity_legs("afrr_capacity")
)

DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        DAY_AHEAD_PRICES,
        ELSPOT_PRICES,
        IMBALANCE_PRICE,
        MFRR_ENERGY,
        REGULATING_BALANCE,
        FCR_ND_DK2,
        FCR_DK1,
        MFRR_CAPACITY,
        AFRR_CAPACITY,
    )
}

QUARTER_HOUR_DAY_AHEAD_FROM = datetime(2025, 9, 30, 22, 0, tzinfo=UTC)  # 2025-10-01 00:00 Copenhagen
QUARTER_HOUR_IMBALANCE_FROM = datetime(2025, 3, 4, 12, 15, tzinfo=UTC)  # ImbalancePrice dataFrom

Plan = list[tuple[Dataset, datetime, datetime]]


def _split(start: datetime, end: datetime, at: datetime, before: Dataset, after: tuple[Dataset, ...]) -> Plan:
    plan: Plan = []
    if start < at:
        plan.append((before, start, min(end, at)))
    if end > at:
        plan.extend((d, max(start, at), end) for d in after)
    return plan


def plan_datasets(selector: str, start: datetime, end: datetime) -> Plan:
    """Resolve a dataset name or a topic alias (day_ahead, imbalance, reserve, all) over [start, end)."""
    if selector in DATASETS:
        return [(DATASETS[selector], start, end)]
    if selector == TopicKind.DAY_AHEAD:
        return _split(start, end, QUARTER_HOUR_DAY_AHEAD_FROM, ELSPOT_PRICES, (DAY_AHEAD_PRICES,))
    if selector == TopicKind.IMBALANCE:
        return _split(
            start, end, QUARTER_HOUR_IMBALANCE_FROM, REGULATING_BALANCE, (IMBALANCE_PRICE, MFRR_ENERGY)
        )
    if selector == TopicKind.RESERVE:
        return [(d, start, end) for d in (FCR_ND_DK2, FCR_DK1, MFRR_CAPACITY, AFRR_CAPACITY)]
    if selector == "all":
        return [p for kind in TopicKind for p in plan_datasets(kind.value, start, end)]
    known = ", ".join([*DATASETS, *TopicKind, "all"])
    raise ValueError(f"unknown dataset {selector!r}; choose one of {known}")
