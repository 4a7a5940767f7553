"""Clustering proven on small fleets: the clustered plan against the exact per-site MIP and its bound.

The exact reference is the per-site MIP (every villa its own unit, integer on/off, SCIP) solved to a
0.2 % gap; its best bound is a lower bound of every plan that passes the checker (spill is only
penalised there, never allowed by the checker), so "within 1 % of the bound" is a proof, not a guess.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from services.bidding.domain.inputs import Fleet, Market, Options
from services.bidding.domain.planner import plan
from services.bidding.domain.synthetic import scaled_site, synthetic_market, synthetic_sites
from tests.unit.test_bidding_checker import check

FIRST = datetime(2026, 11, 22, 23, 0, tzinfo=UTC)  # 00:00 Copenhagen
Q = 96
VILLAS = 16
EXACT = Options(
    time_limit_s=60,
    cluster=False,
    integer_units=True,
    solver="SCIP",
    relative_gap=0.002,
    price_energy_only=False,
    improve_sites=False,  # the MIP's own plan, as the per-site model publishes it
)


@pytest.fixture(scope="module")
def market() -> Market:
    return synthetic_market(FIRST, Q)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clustered_plan_within_one_percent_of_the_exact_per_site_model(market: Market, seed: int) -> None:
    """Sixteen villas in fewer clusters: the published clustered plan loses ≤ 1 % against the per-site MIP.

    Measured (seeds 0–2, 7–9 clusters): −0.2 … +0.04 % against the MIP's own plan, +0.3 … +0.7 % above its
    proven bound; without the per-site re-optimisation (improve_sites=False) 3.8–5.7 %.
    """
    fleet = Fleet.from_sites([replace(s, area="DK2") for s in synthetic_sites(VILLAS, FIRST, Q, seed)])
    exact = plan(fleet, market, EXACT, "exact")
    assert exact.status == "optimal"
    assert exact.model_bound_eur is not None
    clustered = plan(fleet, market, Options(time_limit_s=10), "clustered")
    assert not clustered.fallback
    assert clustered.clusters < fleet.size, "the case must aggregate villas, not plan each alone"
    assert check(fleet, market, clustered) == []
    assert clustered.objective_eur <= exact.objective_eur + 0.01 * abs(exact.objective_eur)
    assert clustered.objective_eur - exact.model_bound_eur <= 0.01 * abs(clustered.objective_eur)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_few_large_units_get_symmetric_bids_by_roles(seed: int) -> None:
    """Ten 30–150 kW units over 4 hours: the fluid LP's capability cannot be rounded onto whole units.

    Followed and re-planned per site, the plan bids nothing; with up/down roles per period it bids and
    earns (measured: objective 23–34 % lower; the exact per-site MIP, 60 s and not proven optimal, is
    then 3.5 % worse, 4 % and 37 % better on seeds 0, 1, 2 — see the benchmark's --lumpy section).
    """
    quarters = 16
    market = synthetic_market(FIRST, quarters)
    market = replace(market, reserve_eur_per_mw_h={a: v * 5 for a, v in market.reserve_eur_per_mw_h.items()})
    fleet = Fleet.from_sites([scaled_site(s, 30.0) for s in synthetic_sites(10, FIRST, quarters, seed)])
    without = plan(fleet, market, Options(time_limit_s=10, seek_max_sites=0), "without")
    with_roles = plan(fleet, market, Options(time_limit_s=10), "roles")
    assert check(fleet, market, with_roles) == []
    assert without.capacity_bids == []
    assert sum(b.capacity_mw for b in with_roles.capacity_bids) >= 0.6 - 1e-9
    assert with_roles.objective_eur <= 0.8 * without.objective_eur
