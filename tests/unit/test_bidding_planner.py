"""The planner's output checked by the independent checker, on small fleets and adversarial cases."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pytest

from services.bidding.domain.inputs import Fleet, Market, Options, SiteInput
from services.bidding.domain.planner import greedy, max_symmetric_plan, plan, pool_sizing
from services.bidding.domain.synthetic import synthetic_market, synthetic_sites
from tests.unit.test_bidding_checker import check

FIRST = datetime(2026, 11, 22, 23, 0, tzinfo=UTC)  # 00:00 Copenhagen
Q = 96
OPTIONS = Options(time_limit_s=10)


def _fleet(count: int = 80, seed: int = 3, **changes: object) -> Fleet:
    changes = {"area": "DK2", **changes}
    sites = [replace(s, **changes) for s in synthetic_sites(count, FIRST, Q, seed)]  # type: ignore[arg-type]
    return Fleet.from_sites(sites)


@pytest.fixture(scope="module")
def market() -> Market:
    return synthetic_market(FIRST, Q)


def test_plan_and_bids_respect_every_rule(market: Market) -> None:
    """Minimum run, lock-out, starts, comfort, symmetry in every quarter, minimum bid and steps."""
    fleet = _fleet(300)
    market = replace(market, reserve_eur_per_mw_h={a: v * 6 for a, v in market.reserve_eur_per_mw_h.items()})
    outcome = plan(fleet, market, OPTIONS, "p1")
    assert not outcome.fallback
    assert outcome.capacity_bids, "a 200-villa fleet offers symmetric capacity at high reserve prices"
    assert check(fleet, market, outcome) == []


def test_max_symmetric_plan_respects_every_rule(market: Market) -> None:
    """The sizing plan holds much more reserve, still within every rule."""
    fleet = _fleet(300)
    outcome = max_symmetric_plan(fleet, market, OPTIONS)
    assert check(fleet, market, outcome) == []
    sizing = pool_sizing(fleet, outcome, 0.3)
    assert sizing.sites_needed_median_quarter is not None
    assert sizing.symmetric_mw_median >= 0.3


def test_all_sites_locked_out_cannot_bid_down_until_the_lockout_ends(market: Market) -> None:
    """Every HP just stopped with a 1-hour lock-out: no down capacity in the first hour, so no bid there."""
    fleet = _fleet(200, hp_on=False, restriction_quarters=4, lockout_quarters=4)
    outcome = max_symmetric_plan(fleet, market, OPTIONS)
    assert check(fleet, market, outcome) == []
    assert not outcome.plan.on[:, :4].any()
    assert all(b.first >= 4 for b in outcome.capacity_bids)
    assert all(outcome.capability.down_mw[a][:4].max() == 0 for a in outcome.capability.down_mw)


def test_half_the_fleet_offline_counts_only_online_sites(market: Market) -> None:
    """Offline sites are never counted; the bid shrinks accordingly and still passes the checker."""
    full = _fleet(400)
    online = np.arange(full.size) % 2 == 0
    half = replace(full, online=online)
    out_full = max_symmetric_plan(full, market, OPTIONS)
    out_half = max_symmetric_plan(half, market, OPTIONS)
    assert check(half, market, out_half) == []
    total_full = sum(b.capacity_mw for b in out_full.capacity_bids)
    total_half = sum(b.capacity_mw for b in out_half.capacity_bids)
    assert total_half < total_full
    assert not (out_half.capability.up_sites[~online]).any()


def test_price_spike_moves_heat_to_gas(market: Market) -> None:
    """A 3000 EUR/MWh spike: HPs past their minimum run go off, heat comes from gas (and stored heat)."""
    fleet = _fleet(100)
    spot = {a: v.copy() for a, v in market.spot.items()}
    for values in spot.values():
        values[40:48] = 3000.0
    spiky = replace(market, spot=spot)
    outcome = plan(fleet, spiky, OPTIONS, "spike")
    assert check(fleet, spiky, outcome) == []
    assert outcome.plan.on[:, 42:48].mean() < 0.05
    assert outcome.plan.on[:, 42:48].mean() < outcome.plan.on[:, 20:28].mean()


def test_heat_pump_used_when_spot_is_below_balance() -> None:
    """Cheap power: HPs carry the heat (no boiler beyond what they cannot cover); dear power: gas does."""
    fleet = _fleet(60)
    cheap = synthetic_market(FIRST, Q)
    cheap = replace(cheap, spot={a: np.full(Q, 10.0) for a in cheap.spot}, reserve_eur_per_mw_h={})
    dear = replace(cheap, spot={a: np.full(Q, 900.0) for a in cheap.spot})
    with_cheap = plan(fleet, cheap, OPTIONS, "cheap")
    with_dear = plan(fleet, dear, OPTIONS, "dear")
    assert with_cheap.plan.on.mean() > 0.4
    assert with_dear.plan.on[:, 8:].mean() == 0.0
    assert check(fleet, cheap, with_cheap) == []


def test_solver_failure_gives_a_safe_fallback_and_no_capacity_bids(market: Market) -> None:
    """An unusable solver never leaves the pool without a plan: greedy fallback, flagged, no FCR bids."""
    fleet = _fleet(40)
    outcome = plan(fleet, market, replace(OPTIONS, solver="NO_SUCH_SOLVER"), "broken")
    assert outcome.fallback
    assert outcome.status == "fallback"
    assert "not available" in outcome.reason
    assert outcome.capacity_bids == []
    assert outcome.plan.on.shape == (40, Q)
    assert check(fleet, market, outcome) == []


def test_too_small_a_fleet_bids_nothing(market: Market) -> None:
    """Five villas cannot reach 0.3 MW: no bid rather than a bid below the minimum."""
    fleet = _fleet(5)
    outcome = max_symmetric_plan(fleet, market, OPTIONS)
    assert outcome.capacity_bids == []
    assert outcome.energy_bids == []


def test_optimiser_beats_greedy(market: Market) -> None:
    """The plan earns more (lower cost − revenue) than HP-when-cheap with what it leaves for bids."""
    fleet = _fleet(200)
    assert plan(fleet, market, OPTIONS, "o").objective_eur < greedy(fleet, market, OPTIONS).objective_eur


def test_site_input_lengths_are_checked() -> None:
    """Sites with different horizons are refused with a clear error."""
    a = SiteInput("a", "DK1", 3.0, (1.0,) * 4, (100.0,) * 4, 10.0, 5.0)
    b = SiteInput("b", "DK1", 3.0, (1.0,) * 5, (100.0,) * 5, 10.0, 5.0)
    with pytest.raises(ValueError, match="one demand and one balance price per quarter"):
        Fleet.from_sites([a, b])


def test_timed_out_solve_falls_back_within_the_rules(market: Market) -> None:
    """A time limit too short for any solution: the greedy plan is published, flagged, within every rule."""
    fleet = _fleet(300)
    outcome = plan(fleet, market, replace(OPTIONS, time_limit_s=0.001), "timed-out")
    assert outcome.fallback
    assert "solver status" in outcome.reason
    assert outcome.capacity_bids == []
    assert check(fleet, market, outcome) == []
