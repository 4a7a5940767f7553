"""The planning job: cluster, solve, disaggregate, bid; a safe greedy fallback when the solver fails."""

from __future__ import annotations

import itertools
import logging
import math
import time
from dataclasses import dataclass, field, replace

import numpy as np

from hybridpool_shared.domain.pooling import guaranteed_mw
from services.bidding.domain.bids import (
    Capability,
    CapacityBid,
    EnergyBid,
    capability,
    capacity_bids,
    energy_bids,
    fcr_d_bids,
    reserved_mw,
)
from services.bidding.domain.clusters import Clusters, build_clusters
from services.bidding.domain.improve import Requirement, improve, release, replay, site_cost_eur
from services.bidding.domain.inputs import BoolArray, Fleet, FloatArray, IntArray, Market, Options, periods
from services.bidding.domain.model import ModelSolution, SolveFailedError, solve
from services.bidding.domain.sim import SimPlan, simulate

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlanOutcome:
    """A finished planning job: the per-site plan, the bids and how good they are."""

    plan_id: str
    plan: SimPlan
    capability: Capability
    capacity_bids: list[CapacityBid]
    energy_bids: list[EnergyBid]
    fallback: bool
    status: str
    reason: str
    clusters: int
    solve_s: float
    total_s: float
    model_objective_eur: float | None
    model_bound_eur: float | None
    energy_cost_eur: float
    reserve_revenue_eur: float
    bid_price_eur_per_mw_h: float
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def objective_eur(self) -> float:
        """Return the realised objective: energy cost + comfort penalty − reserve revenue (forecast)."""
        return self.energy_cost_eur - self.reserve_revenue_eur

    @property
    def model_gap(self) -> float | None:
        """Return the solver's relative gap, if it solved."""
        if self.model_objective_eur is None or self.model_bound_eur is None:
            return None
        return abs(self.model_objective_eur - self.model_bound_eur) / max(1.0, abs(self.model_objective_eur))


def spot_per_site(fleet: Fleet, market: Market) -> FloatArray:
    """Return the spot price of each site's area per quarter, (n, T)."""
    default = np.zeros(market.quarters)
    result: FloatArray = np.vstack([market.spot.get(a, default) for a in fleet.area])
    return result


def energy_cost_eur(fleet: Fleet, market: Market, plan: SimPlan, options: Options) -> float:
    """Return HP electricity at spot + boiler heat at the balance price + end top-up + comfort penalty."""
    spot = spot_per_site(fleet, market)
    hp = float(np.sum(plan.on * fleet.power_kw[:, None] * spot)) / 4000.0
    gas = float(np.sum(plan.gas_kwh * fleet.balance)) / 1000.0
    topup = float(np.sum(plan.topup_kwh * fleet.balance[:, -1])) / 1000.0
    penalty = options.comfort_penalty_eur_per_kwh * float(plan.overflow_kwh.sum())
    return hp + gas + topup + penalty


def revenue_eur(bids: list[CapacityBid], market: Market) -> float:
    """Return the capacity revenue of bids at the forecast price (all accepted)."""
    total = 0.0
    for bid in bids:
        prices = market.fcr_d_eur_per_mw_h.get(bid.product, market.reserve_eur_per_mw_h[bid.area])
        price = float(np.mean(prices[bid.first : bid.last]))
        total += price * bid.capacity_mw * (bid.last - bid.first) / 4.0
    return total


def relaxation_bound(fleet: Fleet, market: Market, options: Options) -> ModelSolution:
    """Solve the relaxed cluster LP: its optimum bounds every per-site plan's objective from below.

    The margin rule's μ − z·σ ≤ μ, pooled heat, the shortest rules, the cheapest boiler and the best
    response per cluster only widen what is allowed, so no plan that passes the checker can do better.
    """
    relaxed = replace(options, integer_units=False, model_derate=0.0)
    return solve(build_clusters(fleet, relaxed, relaxed=True), market, relaxed)


def desired_storage(fleet: Fleet, clusters: Clusters, solution: ModelSolution) -> FloatArray:
    """Each site's share of its cluster's planned store: its start level moved by the cluster's change."""
    start = np.minimum(fleet.storage0_kwh, fleet.storage_kwh)
    member = clusters.cluster_of >= 0
    c = np.maximum(clusters.cluster_of, 0)
    size = np.maximum(clusters.size, 1)[:, None]
    change_per_unit = (solution.store_kwh - (clusters.size * clusters.storage0_kwh)[:, None]) / size
    scale = fleet.storage_kwh / np.maximum(clusters.storage_kwh[c], 1e-9)
    desired = start[:, None] + change_per_unit[c] * scale[:, None]
    desired = np.clip(desired, 0.0, fleet.storage_kwh[:, None])
    result: FloatArray = np.where(member[:, None], desired, start[:, None])
    return result


def plan(fleet: Fleet, market: Market, options: Options, plan_id: str) -> PlanOutcome:
    """Plan the fleet and derive bids; never raises on solver failure (falls back and says so)."""
    began = time.perf_counter()
    clusters = build_clusters(fleet, options)
    spot = spot_per_site(fleet, market)
    try:
        if clusters.count == 0:
            raise SolveFailedError("no online site to optimise")
        solution = solve(clusters, market, options)
    except SolveFailedError as exc:
        LOGGER.error("plan %s: solver failed (%s); publishing the greedy fallback plan", plan_id, exc)
        return _fallback(fleet, market, options, plan_id, str(exc), clusters.count, began)
    sim = simulate(
        fleet, spot, clusters.cluster_of, solution.target_on, desired_storage(fleet, clusters, solution)
    )
    cap = capability(fleet, sim, options)
    price = _bid_price(clusters, market, options, solution)
    cbids = capacity_bids(cap, market, options, price)
    extra: dict[str, float] = {}
    if options.improve_sites:
        sim, cap, cbids, extra = _improved(fleet, market, options, spot, sim, cap, cbids, price)
    if options.improve_sites and 0 < int(fleet.online.sum()) <= options.seek_max_sites:
        sim, cap, cbids = _seek(fleet, market, options, spot, (sim, cap, cbids), price)
    cbids = cbids + fcr_d_bids(fleet, sim, cap, market, options, cbids, price)
    return PlanOutcome(
        plan_id=plan_id,
        plan=sim,
        capability=cap,
        capacity_bids=cbids,
        energy_bids=energy_bids(fleet, cap, market, cbids),
        fallback=False,
        status=solution.status,
        reason="",
        clusters=clusters.count,
        solve_s=solution.solve_s,
        total_s=time.perf_counter() - began,
        model_objective_eur=solution.objective_eur,
        model_bound_eur=solution.bound_eur,
        energy_cost_eur=energy_cost_eur(fleet, market, sim, options),
        reserve_revenue_eur=revenue_eur(cbids, market),
        bid_price_eur_per_mw_h=price,
        extra=extra,
    )


def _improved(
    fleet: Fleet,
    market: Market,
    options: Options,
    spot: FloatArray,
    sim: SimPlan,
    cap: Capability,
    cbids: list[CapacityBid],
    price: float,
) -> tuple[SimPlan, Capability, list[CapacityBid], dict[str, float]]:
    """Re-plan every site on its own, keeping the capability the bids rest on; the better plan wins."""
    requirement = Requirement(np.zeros_like(sim.on), np.zeros_like(sim.on))
    areas = np.array(fleet.area)
    for bid in cbids:
        rows = areas == bid.area
        requirement.up[rows, bid.first : bid.last] = cap.up_sites[rows, bid.first : bid.last]
        requirement.down[rows, bid.first : bid.last] = cap.down_sites[rows, bid.first : bid.last]
    began = time.perf_counter()
    penalty = options.comfort_penalty_eur_per_kwh
    kept = improve(fleet, spot, sim, requirement, penalty, options.improve_budget_s)
    # then each site without the requirement; it may follow that plan where the pool can spare it
    none = Requirement(np.zeros_like(sim.on), np.zeros_like(sim.on))
    left_s = options.improve_budget_s - (time.perf_counter() - began)
    # sites without a requirement are free already
    bound: BoolArray = np.logical_or(requirement.up.any(axis=1), requirement.down.any(axis=1))
    free = improve(fleet, spot, kept, none, penalty, left_s, only=bound)
    saving = site_cost_eur(fleet, spot, kept, penalty) - site_cost_eur(fleet, spot, free, penalty)
    kept_bids = capacity_bids(capability(fleet, kept, options), market, options, price)
    held = {area: reserved_mw(kept_bids, area, market.quarters) for area in sorted(set(fleet.area))}
    released = release(fleet, kept, free, saving, held, options.z)
    better = replay(fleet, np.where(released[:, None], free.on, kept.on))
    better_cap = capability(fleet, better, options)
    better_bids = capacity_bids(better_cap, market, options, price)
    before = energy_cost_eur(fleet, market, sim, options) - revenue_eur(cbids, market)
    after = energy_cost_eur(fleet, market, better, options) - revenue_eur(better_bids, market)
    stats = {
        "improve_s": time.perf_counter() - began,
        "sites_replanned": float((kept.on != sim.on).any(axis=1).sum()),
        "sites_released": float(released.sum()),
        "followed_objective_eur": before,
    }
    if after <= before:
        return better, better_cap, better_bids, stats
    return sim, cap, cbids, stats


SEEK_SWEEPS = 2


def _seek(
    fleet: Fleet,
    market: Market,
    options: Options,
    spot: FloatArray,
    current: tuple[SimPlan, Capability, list[CapacityBid]],
    price: float,
) -> tuple[SimPlan, Capability, list[CapacityBid]]:
    """Few units: give units up and down roles per product period, re-plan them by DP, keep what pays.

    With few units the fluid LP's fractional capability cannot be rounded onto whole units, so the
    followed plan may hold no bid at all. Period by period, dearest first, the online units of the area
    are split into an up side (running past its minimum run through the period) and a down side (idle
    past its lock-out), balanced by deliverable kW, taken largest first, most running first or emptiest
    store first (twice over all periods); every site is re-planned by DP with all roles accepted so far
    as requirements, and a period's roles stay only if the objective (energy − revenue) improves.
    """
    areas = np.array(fleet.area)
    penalty = options.comfort_penalty_eur_per_kwh
    best = current
    best_objective = energy_cost_eur(fleet, market, current[0], options) - revenue_eur(current[2], market)
    roles = Requirement(np.zeros_like(current[0].on), np.zeros_like(current[0].on))
    kw = fleet.availability * fleet.response * fleet.power_kw
    for area in sorted(market.reserve_eur_per_mw_h):
        prices = market.reserve_eur_per_mw_h[area]
        rows = np.flatnonzero((areas == area) & fleet.online)
        rule = market.products.get(area)
        if rule is None or float(kw[rows].sum()) < 2000.0 * rule.min_mw:
            continue  # too small a pool for any bid: nothing to seek
        ranked = sorted(periods(market, area), key=lambda p: -float(np.mean(prices[p.first : p.last])))
        for period in ranked * SEEK_SWEEPS:
            if float(np.mean(prices[period.first : period.last])) <= 0:
                continue
            running = best[0].on[rows, period.first : period.last].mean(axis=1)
            fill = best[0].storage_kwh[rows, period.first] / np.maximum(fleet.storage_kwh[rows], 1e-9)
            orders = (
                np.argsort(-kw[rows], kind="stable"),
                np.argsort(-running, kind="stable"),
                np.argsort(fill, kind="stable"),
            )
            for order, target_mw in itertools.product(orders, (rule.min_mw, 2 * rule.min_mw, math.inf)):
                trial = Requirement(roles.up.copy(), roles.down.copy())
                _split(fleet, rows[order], trial, (period.first, period.last), target_mw, options.z)
                planned = improve(fleet, spot, best[0], trial, penalty, prefer_cheaper=False)
                cap = capability(fleet, planned, options)
                bids = capacity_bids(cap, market, options, price)
                objective = energy_cost_eur(fleet, market, planned, options) - revenue_eur(bids, market)
                if objective < best_objective - 1e-9:
                    best, best_objective, roles = (planned, cap, bids), objective, trial
    return best


def _split(
    fleet: Fleet, units: IntArray, roles: Requirement, quarters: tuple[int, int], target_mw: float, z: float
) -> None:
    """Give each unit, in the order given, to the side that guarantees less, until both reach the target."""
    first, last = quarters
    sides: dict[bool, list[int]] = {True: [], False: []}

    def guaranteed(members: list[int]) -> float:
        return guaranteed_mw(fleet.power_kw[members], fleet.availability[members], fleet.response[members], z)

    for i in units:
        up_mw, down_mw = guaranteed(sides[True]), guaranteed(sides[False])
        if min(up_mw, down_mw) >= target_mw:
            break
        up = up_mw <= down_mw
        sides[up].append(int(i))
        if up:
            roles.up[i, first:last] = True
        else:
            roles.down[i, first:last] = True


def _bid_price(clusters: Clusters, market: Market, options: Options, solution: ModelSolution) -> float:
    """Price = the cost of holding the flexibility per MW·h (energy-only re-solve), at least the floor.

    Under pay-as-cleared, offering at cost is what earns most: the clearing price is paid whatever the
    bid; the reserve price forecast already decided, inside the optimiser, whether holding was worth it.
    """
    held = sum(
        steps * 0.1 * market.products[area].period_hours
        for (area, _), steps in solution.reserve_steps.items()
    )
    if not options.price_energy_only or held <= 0:
        return options.bid_price_floor_eur_per_mw_h
    try:
        quick = replace(options, time_limit_s=max(1.0, options.time_limit_s / 3))
        energy_only = solve(clusters, market, quick, with_reserve=False)
    except SolveFailedError:
        return options.bid_price_floor_eur_per_mw_h
    extra_cost = solution.objective_eur + _model_revenue(market, solution) - energy_only.bound_eur
    per_mw_h = max(0.0, extra_cost) / held
    return max(options.bid_price_floor_eur_per_mw_h, math.ceil(per_mw_h * 100) / 100)


def _model_revenue(market: Market, solution: ModelSolution) -> float:
    total = 0.0
    for (area, first), steps in solution.reserve_steps.items():
        rule = market.products[area]
        last = first + rule.period_hours * 4
        total += (
            float(np.mean(market.reserve_eur_per_mw_h[area][first:last])) * steps * 0.1 * rule.period_hours
        )
    return total


def _fallback(
    fleet: Fleet, market: Market, options: Options, plan_id: str, reason: str, clusters: int, began: float
) -> PlanOutcome:
    sim = simulate(fleet, spot_per_site(fleet, market))
    cap = capability(fleet, sim, options)
    return PlanOutcome(
        plan_id=plan_id,
        plan=sim,
        capability=cap,
        capacity_bids=[],
        energy_bids=[],
        fallback=True,
        status="fallback",
        reason=reason,
        clusters=clusters,
        solve_s=0.0,
        total_s=time.perf_counter() - began,
        model_objective_eur=None,
        model_bound_eur=None,
        energy_cost_eur=energy_cost_eur(fleet, market, sim, options),
        reserve_revenue_eur=0.0,
        bid_price_eur_per_mw_h=options.bid_price_floor_eur_per_mw_h,
    )


def greedy(fleet: Fleet, market: Market, options: Options) -> PlanOutcome:
    """The baseline: HP whenever spot < balance price (within the rules), bids from what that leaves."""
    began = time.perf_counter()
    sim = simulate(fleet, spot_per_site(fleet, market))
    cap = capability(fleet, sim, options)
    cbids = capacity_bids(cap, market, options, options.bid_price_floor_eur_per_mw_h)
    return PlanOutcome(
        plan_id="greedy",
        plan=sim,
        capability=cap,
        capacity_bids=cbids,
        energy_bids=energy_bids(fleet, cap, market, cbids),
        fallback=False,
        status="greedy",
        reason="",
        clusters=0,
        solve_s=0.0,
        total_s=time.perf_counter() - began,
        model_objective_eur=None,
        model_bound_eur=None,
        energy_cost_eur=energy_cost_eur(fleet, market, sim, options),
        reserve_revenue_eur=revenue_eur(cbids, market),
        bid_price_eur_per_mw_h=options.bid_price_floor_eur_per_mw_h,
    )


@dataclass(frozen=True)
class PoolSizing:
    """How many sites of the current fleet make the minimum symmetric bid, from a solved plan."""

    sites: int
    min_bid_mw: float
    symmetric_mw_min: float
    symmetric_mw_median: float
    mw_per_site_min: float
    mw_per_site_median: float
    symmetric_mw_p10: float
    sites_needed_all_quarters: int | None
    sites_needed_90pct_quarters: int | None
    sites_needed_median_quarter: int | None
    full_power_sites_needed: int


SIZING_RESERVE_EUR_PER_MW_H = 1000.0


def max_symmetric_plan(fleet: Fleet, market: Market, options: Options) -> PlanOutcome:
    """Plan for the most symmetric capacity the fleet can hold (reserve worth far more than energy)."""
    flat = {
        area: np.full(market.quarters, SIZING_RESERVE_EUR_PER_MW_H) for area in market.reserve_eur_per_mw_h
    }
    tilted = replace(market, reserve_eur_per_mw_h=flat)
    # no per-site re-plan: it saves energy but keeps only the capability bids rest on, never more
    return plan(fleet, tilted, replace(options, price_energy_only=False, improve_sites=False), "sizing")


def pool_sizing(fleet: Fleet, outcome: PlanOutcome, min_bid_mw: float = 0.3) -> PoolSizing:
    """Scale the plan's guaranteed symmetric MW per online site to the sites needed for min_bid_mw.

    Reported for the worst quarter, the quarter at the 10th percentile (90 % of quarters biddable) and
    the median quarter; "full power" is the seed's rule of thumb for comparison (all HP power switchable).
    """
    symmetric = np.zeros(fleet.quarters)
    for area in outcome.capability.up_mw:
        symmetric += np.minimum(outcome.capability.up_mw[area], outcome.capability.down_mw[area])
    online = max(1, int(fleet.online.sum()))
    low, p10, mid = float(symmetric.min()), float(np.percentile(symmetric, 10)), float(np.median(symmetric))
    mean_power_mw = float(fleet.power_kw[fleet.online].mean()) / 1000.0 if fleet.online.any() else 0.0

    def needed(mw: float) -> int | None:
        return math.ceil(min_bid_mw / (mw / online)) if mw > 0 else None

    return PoolSizing(
        sites=fleet.size,
        min_bid_mw=min_bid_mw,
        symmetric_mw_min=round(low, 3),
        symmetric_mw_median=round(mid, 3),
        mw_per_site_min=low / online,
        mw_per_site_median=mid / online,
        symmetric_mw_p10=round(p10, 3),
        sites_needed_all_quarters=needed(low),
        sites_needed_90pct_quarters=needed(p10),
        sites_needed_median_quarter=needed(mid),
        full_power_sites_needed=math.ceil(min_bid_mw / mean_power_mw) if mean_power_mw else 0,
    )
