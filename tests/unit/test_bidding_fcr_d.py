"""FCR-D up and down in DK2: only from sites fast enough for 30 s, on top of FCR-N, never beyond the pool."""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from hybridpool_shared.domain.pooling import guaranteed_mw_per_quarter
from hybridpool_shared.messages import Direction, ReservePriceIngested
from services.bidding.adapters import Book
from services.bidding.app import DAY_AHEAD, bid_messages
from services.bidding.assemble import Assembled, assemble
from services.bidding.domain.bids import reserved_mw
from services.bidding.domain.inputs import Options
from services.bidding.domain.planner import PlanOutcome, plan
from services.bidding.domain.sim import down_capable, up_capable
from tests.unit.test_bidding_inputs import FIRST, NOW, SETTINGS, _master, _state

SITES = 400
FAST = 160  # the first 160 villas are measured to reach 100 % within 30 s


def _book_with_fcr_d_prices() -> Book:
    book = Book()
    for h in range(24):
        yesterday = FIRST + timedelta(hours=h) - timedelta(days=1)
        for product, eur in (("FCR-N", 20.0), ("FCR-D upp", 15.0), ("FCR-D ned", 12.0)):
            book.add_reserve(
                ReservePriceIngested(
                    area="DK2",
                    product=product,
                    interval_start=yesterday,
                    interval_end=yesterday + timedelta(hours=1),
                    interval_minutes=60,
                    price_eur_per_mw_per_h=eur,
                    source="test",
                    ingested_at=NOW,
                )
            )
    return book


def _planned(fast_share: float, book: Book) -> tuple[Assembled, PlanOutcome]:
    masters = {f"v{i:03d}": _master(f"v{i:03d}", "DK2") for i in range(SITES)}
    states = {k: _state(k, i % 2 == 0) for i, k in enumerate(masters)}
    fast = {k: (fast_share if i < FAST else 0.0) for i, k in enumerate(masters)}
    built = assemble(masters, states, {}, book, SETTINGS, FIRST, 96, fast)
    assert built is not None
    return built, plan(built.fleet, built.market, Options(time_limit_s=20, improve_budget_s=5), "p")


def test_fast_sites_carry_fcr_d_each_way_within_what_the_pool_holds_beyond_fcr_n() -> None:
    built, outcome = _planned(1.0, _book_with_fcr_d_prices())
    fleet, market = built.fleet, built.market
    fcr_d = [b for b in outcome.capacity_bids if b.product.startswith("fcr_d")]
    assert {b.direction for b in fcr_d} == {"up", "down"}
    assert all(b.capacity_mw >= 0.3 and b.last - b.first == 4 for b in fcr_d)

    # independent check, quarter by quarter, from the per-site plan
    fast = np.arange(fleet.size) < FAST
    args = (fleet.power_kw[fast], fleet.availability[fast], fleet.response_fcr_d[fast])  # type: ignore[index]
    for direction, capable in (
        ("up", up_capable(fleet, outcome.plan)),
        ("down", down_capable(fleet, outcome.plan)),
    ):
        fast_mw = guaranteed_mw_per_quarter(*args, capable[fast], 2.326)
        pool_mw = (outcome.capability.up_mw if direction == "up" else outcome.capability.down_mw)["DK2"]
        held = reserved_mw(outcome.capacity_bids, "DK2", market.quarters, direction)
        assert np.all(held <= pool_mw + 1e-9)  # FCR-N and FCR-D together never beyond the pool
        for b in (b for b in fcr_d if b.direction == direction):
            assert b.capacity_mw <= fast_mw[b.first : b.last].min() + 1e-9  # carried by fast sites only

    messages = bid_messages(DAY_AHEAD, built, outcome, NOW)
    directions = {m.product.value: m.direction for m in messages if m.product.value.startswith("fcr_d")}
    assert directions == {"fcr_d_up": Direction.UP, "fcr_d_down": Direction.DOWN}
    assert outcome.energy_bids == [] or all(e.capacity_mw >= 1.0 for e in outcome.energy_bids)


def test_no_fcr_d_without_fast_sites_or_without_an_fcr_d_price() -> None:
    _, slow = _planned(0.0, _book_with_fcr_d_prices())
    assert not [b for b in slow.capacity_bids if b.product.startswith("fcr_d")]
    _, unpriced = _planned(1.0, Book())
    assert not [b for b in unpriced.capacity_bids if b.product.startswith("fcr_d")]
