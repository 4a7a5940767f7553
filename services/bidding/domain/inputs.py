"""The planner's own inputs: a columnar fleet, market curves and options (no I/O, no messages)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt

from hybridpool_shared.domain.pooling import DEFAULT_Z
from hybridpool_shared.timeutil import COPENHAGEN, QUARTER, require_utc

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class SiteInput:
    """One site as the planner sees it (built by adapters from master data, live state and prices)."""

    site_id: str
    area: str
    hp_power_kw: float
    demand_kw: tuple[float, ...]
    balance_eur_per_mwh: tuple[float, ...]
    storage_kwh: float
    storage0_kwh: float
    min_run_quarters: int = 1
    lockout_quarters: int = 1
    max_starts_per_hour: int = 3
    hp_on: bool = False
    restriction_quarters: int = 0
    online: bool = True
    response: float = 1.0
    availability: float = 0.98
    response_fcr_d: float = 0.0  # deliverable share within FCR-D's 30 s (0: not measured fast enough)


@dataclass(frozen=True)
class Fleet:
    """Every site as columns: per-site vectors (n,) and per-site-quarter matrices (n, T)."""

    site_ids: list[str]
    area: list[str]
    power_kw: FloatArray
    min_run_q: IntArray
    lockout_q: IntArray
    max_starts_h: IntArray
    on0: BoolArray
    restrict0_q: IntArray
    online: BoolArray
    response: FloatArray
    availability: FloatArray
    demand_kw: FloatArray
    balance: FloatArray
    storage_kwh: FloatArray
    storage0_kwh: FloatArray
    response_fcr_d: FloatArray | None = None  # None: no site qualifies for FCR-D

    @property
    def size(self) -> int:
        """Return the number of sites."""
        return len(self.site_ids)

    @property
    def quarters(self) -> int:
        """Return the number of quarters planned."""
        return int(self.demand_kw.shape[1])

    @classmethod
    def from_sites(cls, sites: list[SiteInput]) -> Fleet:
        """Build the columns from per-site records (all with the same number of quarters)."""
        if not sites:
            raise ValueError("a fleet needs at least one site")
        lengths = {len(s.demand_kw) for s in sites} | {len(s.balance_eur_per_mwh) for s in sites}
        if len(lengths) != 1:
            raise ValueError("every site needs one demand and one balance price per quarter")
        return cls(
            site_ids=[s.site_id for s in sites],
            area=[s.area for s in sites],
            power_kw=np.array([s.hp_power_kw for s in sites], dtype=np.float64),
            min_run_q=np.array([s.min_run_quarters for s in sites], dtype=np.int64),
            lockout_q=np.array([s.lockout_quarters for s in sites], dtype=np.int64),
            max_starts_h=np.array([s.max_starts_per_hour for s in sites], dtype=np.int64),
            on0=np.array([s.hp_on for s in sites], dtype=np.bool_),
            restrict0_q=np.array([s.restriction_quarters for s in sites], dtype=np.int64),
            online=np.array([s.online for s in sites], dtype=np.bool_),
            response=np.array([s.response for s in sites], dtype=np.float64),
            availability=np.array([s.availability for s in sites], dtype=np.float64),
            demand_kw=np.array([s.demand_kw for s in sites], dtype=np.float64),
            balance=np.array([s.balance_eur_per_mwh for s in sites], dtype=np.float64),
            storage_kwh=np.array([s.storage_kwh for s in sites], dtype=np.float64),
            storage0_kwh=np.array([s.storage0_kwh for s in sites], dtype=np.float64),
            response_fcr_d=np.array([s.response_fcr_d for s in sites], dtype=np.float64),
        )


@dataclass(frozen=True)
class ProductRule:
    """A symmetric capacity product of one area: period length, minimum and step."""

    product: str
    period_hours: int
    min_mw: float = 0.3
    step_mw: float = 0.1


DEFAULT_PRODUCTS: dict[str, ProductRule] = {
    "DK1": ProductRule("fcr_dk1", 4),
    "DK2": ProductRule("fcr_n", 1),
}


@dataclass(frozen=True)
class Market:
    """Prices for the planned quarters: spot and reserve forecast per area, one value per quarter."""

    first_quarter: datetime
    quarters: int
    spot: dict[str, FloatArray]
    reserve_eur_per_mw_h: dict[str, FloatArray]
    products: dict[str, ProductRule] = field(default_factory=lambda: dict(DEFAULT_PRODUCTS))
    mfrr_min_mw: float = 1.0
    fcr_d_eur_per_mw_h: dict[str, FloatArray] = field(default_factory=dict)  # DK2's fcr_d_up / fcr_d_down
    fcr_d_min_mw: float = 0.3

    def quarter_start(self, index: int) -> datetime:
        """Return the UTC start of quarter number index."""
        return require_utc(self.first_quarter) + index * QUARTER


@dataclass(frozen=True)
class Period:
    """A bidding period: [start, end) quarter indices of the plan."""

    area: str
    product: ProductRule
    first: int
    last: int  # exclusive

    @property
    def quarters(self) -> range:
        """Return the quarter indices in the period."""
        return range(self.first, self.last)

    @property
    def hours(self) -> float:
        """Return the period's length in hours."""
        return (self.last - self.first) / 4.0


def periods(market: Market, area: str) -> list[Period]:
    """Split the horizon into whole product periods (aligned on Copenhagen time; partial ones dropped)."""
    rule = market.products.get(area)
    if rule is None:
        return []
    block: dict[tuple[object, int], list[int]] = {}
    for t in range(market.quarters):
        local = market.quarter_start(t).astimezone(COPENHAGEN)
        block.setdefault((local.date(), local.hour // rule.period_hours), []).append(t)
    result = []
    for idx in block.values():
        if len(idx) == rule.period_hours * 4 and _aligned(market, idx[0], rule):
            result.append(Period(area, rule, idx[0], idx[-1] + 1))
    return result


def _aligned(market: Market, first: int, rule: ProductRule) -> bool:
    local = market.quarter_start(first).astimezone(COPENHAGEN)
    return local.minute == 0 and local.hour % rule.period_hours == 0


@dataclass(frozen=True)
class Options:
    """How to plan: solver, limits, clustering and margins."""

    solver: str = "HIGHS"
    time_limit_s: float = 20.0
    relative_gap: float = 0.005
    cluster: bool = True
    integer_units: bool = False
    verbose: bool = False
    power_bucket_kw: float = 2.0
    price_bins: int = 2
    demand_bins: int = 2
    storage_bins: int = 1
    model_derate: float = 0.15
    z: float = DEFAULT_Z
    comfort_penalty_eur_per_kwh: float = 5.0
    bid_price_floor_eur_per_mw_h: float = 1.0
    price_energy_only: bool = True
    max_bid_mw: float = 50.0
    improve_sites: bool = True
    improve_budget_s: float = 60.0
    seek_max_sites: int = 60


def quarter_starts(first: datetime, count: int) -> list[datetime]:
    """Return count UTC quarter starts from first."""
    base = require_utc(first)
    return [base + timedelta(minutes=15 * i) for i in range(count)]
