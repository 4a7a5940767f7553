"""What the Danish reserve markets accept from a bid: product period, alignment and minimum size.

Figures from the TSOs' product rules (see the project's market notes): FCR in DK1 is bought in
symmetric 4-hour blocks (00–04 … 20–24 local time) of at least 1 MW; FCR-N and FCR-D up/down in DK2
per hour, at least 0.1 MW; mFRR capacity per hour and mFRR energy per quarter-hour, at least 1 MW.
Every size goes in 0.1 MW steps (the bid message refuses anything else).
"""

from __future__ import annotations

from dataclasses import dataclass

from hybridpool_shared.messages import BidSubmitted, Direction, ReserveProduct
from hybridpool_shared.timeutil import COPENHAGEN


@dataclass(frozen=True)
class ProductRules:
    """One product's market rules."""

    product: ReserveProduct
    period_minutes: int
    min_mw: float
    directions: frozenset[Direction]
    areas: frozenset[str]


_DK = frozenset({"DK1", "DK2"})
PRODUCT_RULES: dict[ReserveProduct, ProductRules] = {
    r.product: r
    for r in (
        ProductRules(ReserveProduct.FCR_DK1, 240, 1.0, frozenset({Direction.SYMMETRIC}), frozenset({"DK1"})),
        ProductRules(ReserveProduct.FCR_N, 60, 0.1, frozenset({Direction.SYMMETRIC}), frozenset({"DK2"})),
        ProductRules(ReserveProduct.FCR_D_UP, 60, 0.1, frozenset({Direction.UP}), frozenset({"DK2"})),
        ProductRules(ReserveProduct.FCR_D_DOWN, 60, 0.1, frozenset({Direction.DOWN}), frozenset({"DK2"})),
        ProductRules(ReserveProduct.MFRR_CAPACITY, 60, 1.0, frozenset({Direction.UP, Direction.DOWN}), _DK),
        ProductRules(ReserveProduct.MFRR_ENERGY, 15, 1.0, frozenset({Direction.UP, Direction.DOWN}), _DK),
    )
}


def product_area(product: ReserveProduct) -> str | None:
    """The one bidding zone a product is bought in (FCR: DK1; FCR-N/FCR-D: DK2), or None for both."""
    areas = PRODUCT_RULES[product].areas
    return next(iter(areas)) if len(areas) == 1 else None


def market_min_mw(product: ReserveProduct) -> float:
    """Return the smallest bid the market accepts for a product."""
    return PRODUCT_RULES[product].min_mw


def bid_violations(bid: BidSubmitted) -> list[str]:
    """Return every market rule the bid breaks (empty: the market may consider it)."""
    rules = PRODUCT_RULES[bid.product]
    found = []
    if bid.area not in rules.areas:
        found.append(f"{bid.product.value} is not bought in {bid.area}")
    if bid.direction not in rules.directions:
        found.append(f"{bid.product.value} is not bid {bid.direction.value}")
    if bid.interval_minutes != rules.period_minutes:
        found.append(
            f"{bid.product.value} periods are {rules.period_minutes} min, not {bid.interval_minutes}"
        )
    local = bid.interval_start.astimezone(COPENHAGEN)
    if rules.period_minutes >= 60 and (local.minute or local.hour % (rules.period_minutes // 60)):
        found.append(f"{bid.product.value} periods start at whole {rules.period_minutes // 60} h local time")
    if bid.capacity_mw < rules.min_mw - 1e-9:
        found.append(
            f"{bid.capacity_mw:.1f} MW is below the {bid.product.value} minimum of {rules.min_mw} MW"
        )
    return found
