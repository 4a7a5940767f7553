"""The per-site dynamic programme against brute force, and the rules it must keep (checker, capability)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import numpy as np
import pytest

from services.bidding.domain.bids import reserved_mw
from services.bidding.domain.improve import Requirement, improve, release, replay
from services.bidding.domain.inputs import Fleet, Options, SiteInput
from services.bidding.domain.planner import plan, spot_per_site
from services.bidding.domain.sim import SimPlan, down_capable, simulate, up_capable
from services.bidding.domain.synthetic import synthetic_fleet, synthetic_market
from tests.unit.test_bidding_checker import _began_all, guaranteed, site_violations

FIRST = datetime(2026, 11, 22, 23, 0, tzinfo=UTC)
SHORT = 10


def _cost_eur(site: SiteInput, spot: list[float], on: tuple[bool, ...]) -> float:
    """Energy cost of one site's plan in plain loops: HP at spot, boiler at the balance price, end top-up."""
    level = min(site.storage0_kwh, site.storage_kwh)
    cost = 0.0
    for t, running in enumerate(on):
        cost += spot[t] * site.hp_power_kw * running / 4000.0
        level += (site.hp_power_kw * running - site.demand_kw[t]) / 4.0
        if level < 0:
            cost += -level * site.balance_eur_per_mwh[t] / 1000.0
            level = 0.0
        level = min(level, site.storage_kwh)
    return (
        cost
        + max(0.0, min(site.storage0_kwh, site.storage_kwh) - level) * site.balance_eur_per_mwh[-1] / 1000.0
    )


def _site(seed: int) -> tuple[SiteInput, list[float]]:
    rng = np.random.default_rng(seed)
    power = float(rng.uniform(2.0, 5.0))
    store = float(rng.uniform(2.0, 8.0))
    site = SiteInput(
        site_id=f"s{seed}",
        area="DK1",
        hp_power_kw=power,
        demand_kw=tuple(float(d) for d in rng.uniform(0.2, 0.9, SHORT) * power),
        balance_eur_per_mwh=tuple(float(b) for b in rng.uniform(80, 160, SHORT)),
        storage_kwh=store,
        storage0_kwh=store * float(rng.uniform(0.2, 0.8)),
        min_run_quarters=int(rng.integers(1, 3)),
        lockout_quarters=int(rng.integers(1, 3)),
        hp_on=bool(rng.random() < 0.5),
        restriction_quarters=int(rng.integers(0, 2)),
    )
    return site, [float(p) for p in rng.uniform(40, 200, SHORT)]


@pytest.mark.parametrize("seed", range(8))
def test_dynamic_programme_matches_brute_force_on_one_site(seed: int) -> None:
    """All 1,024 on/off plans of a 10-quarter site tried: the DP's plan is within 0.5 % of the best."""
    site, spot = _site(seed)
    fleet = Fleet.from_sites([site])
    feasible = [
        on
        for on in itertools.product((False, True), repeat=SHORT)
        if not site_violations(fleet, 0, np.array(on))
    ]
    best = min(_cost_eur(site, spot, on) for on in feasible)
    spot_matrix = np.array([spot])
    start = simulate(fleet, spot_matrix)  # the greedy plan as input
    none = Requirement(np.zeros((1, SHORT), dtype=np.bool_), np.zeros((1, SHORT), dtype=np.bool_))
    improved = improve(fleet, spot_matrix, start, none, 5.0)
    assert site_violations(fleet, 0, improved.on[0]) == []
    assert _cost_eur(site, spot, tuple(bool(v) for v in improved.on[0])) <= best * 1.005 + 1e-9


def test_required_capability_is_kept_and_no_site_costs_more() -> None:
    """Sites required up- or down-capable in quarters 40–60 stay so; every rule holds; none pays more."""
    fleet = synthetic_fleet(300, FIRST, 96, seed=4)
    market = synthetic_market(FIRST, 96)
    spot = spot_per_site(fleet, market)
    start = simulate(fleet, spot)
    window = np.zeros((fleet.size, 96), dtype=np.bool_)
    window[:, 40:60] = True
    requirement = Requirement(up_capable(fleet, start) & window, down_capable(fleet, start) & window)
    improved = improve(fleet, spot, start, requirement, 5.0)
    assert not (requirement.up & ~up_capable(fleet, improved)).any()
    assert not (requirement.down & ~down_capable(fleet, improved)).any()
    for i in range(fleet.size):
        assert site_violations(fleet, i, improved.on[i]) == []
    before = replay(fleet, start.on)
    cost = _plan_cost(fleet, spot, improved)
    assert np.all(cost <= _plan_cost(fleet, spot, before) + 1e-9)
    assert cost.sum() < 0.97 * _plan_cost(fleet, spot, before).sum(), "the DP must find real savings"


def _plan_cost(fleet: Fleet, spot: np.ndarray, planned: SimPlan) -> np.ndarray:
    """Each site's energy cost (plain sums over the plan's own boiler heat and top-up)."""
    on, gas, topup = planned.on, planned.gas_kwh, planned.topup_kwh
    result: np.ndarray = (
        (on * fleet.power_kw[:, None] * spot).sum(axis=1) / 4000
        + (gas * fleet.balance).sum(axis=1) / 1000
        + topup * fleet.balance[:, -1] / 1000
    )
    return result


def test_released_sites_leave_every_held_megawatt_guaranteed() -> None:
    """After releasing sites to their free plans the checker's own margin rule still covers every bid."""
    fleet = synthetic_fleet(600, FIRST, 96, seed=5)
    market = synthetic_market(FIRST, 96)
    options = Options(improve_sites=False, price_energy_only=False)
    spot = spot_per_site(fleet, market)
    followed = plan(fleet, market, options, "followed")  # the optimiser's targets followed, not re-planned
    start, cap, bids = followed.plan, followed.capability, followed.capacity_bids
    assert bids, "the case needs held capacity"
    requirement = Requirement(np.zeros_like(start.on), np.zeros_like(start.on))
    areas = np.array(fleet.area)
    for bid in bids:
        rows = areas == bid.area
        requirement.up[rows, bid.first : bid.last] = cap.up_sites[rows, bid.first : bid.last]
        requirement.down[rows, bid.first : bid.last] = cap.down_sites[rows, bid.first : bid.last]
    kept = improve(fleet, spot, start, requirement, 5.0)
    none = Requirement(np.zeros_like(start.on), np.zeros_like(start.on))
    free = improve(fleet, spot, kept, none, 5.0)
    saving = _plan_cost(fleet, spot, kept) - _plan_cost(fleet, spot, free)
    held = {area: reserved_mw(bids, area, 96) for area in ("DK1", "DK2")}
    released = release(fleet, kept, free, saving, held, options.z)
    assert released.any()
    final = replay(fleet, np.where(released[:, None], free.on, kept.on))
    began = _began_all(fleet, final.on)
    for bid in bids:
        for t in range(bid.first, bid.last):
            assert guaranteed(fleet, final.on, began, bid.area, t, True) >= bid.capacity_mw - 1e-9
            assert guaranteed(fleet, final.on, began, bid.area, t, False) >= bid.capacity_mw - 1e-9


@pytest.mark.parametrize("case", ["all_locked_out", "half_offline"])
def test_adversarial_fleets_pass_the_checker_after_the_per_site_replan(case: str) -> None:
    """Re-planned (DP, release), adversarial fleets still pass every check at high reserve prices."""
    from dataclasses import replace

    from services.bidding.domain.synthetic import synthetic_sites
    from tests.unit.test_bidding_checker import check

    sites = [replace(s, area="DK2") for s in synthetic_sites(600, FIRST, 96, 3)]
    if case == "all_locked_out":
        sites = [replace(s, hp_on=False, restriction_quarters=4, lockout_quarters=4) for s in sites]
    fleet = Fleet.from_sites(sites)
    if case == "half_offline":
        fleet = replace(fleet, online=np.arange(fleet.size) % 2 == 0)
    market = synthetic_market(FIRST, 96)
    market = replace(market, reserve_eur_per_mw_h={a: v * 6 for a, v in market.reserve_eur_per_mw_h.items()})
    outcome = plan(fleet, market, Options(time_limit_s=10), case)
    assert not outcome.fallback
    assert outcome.extra["sites_replanned"] > 0
    assert outcome.capacity_bids
    assert check(fleet, market, outcome) == []
    assert not outcome.capability.up_sites[~fleet.online].any()
    assert not outcome.capability.down_sites[~fleet.online].any()
    if case == "all_locked_out":
        assert all(b.first >= 4 for b in outcome.capacity_bids)
