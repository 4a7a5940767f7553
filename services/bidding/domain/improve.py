"""Per-site re-optimisation of a feasible plan against the true objective (dynamic programming).

The cluster model pools each cluster's heat in one store, so its targets cannot all be realised per
site: one house cannot lend stored heat to another. Here every site is re-planned on its own, exactly
by its own rules, for its own energy cost (HP at spot, boiler at its balance price, end top-up), while
every quarter in which the input plan made it up- or down-capable inside a bid period stays so: the
pool's symmetric capacity never shrinks below what the input plan offered. The thermal store is a
grid of levels with linear interpolation of the cost-to-go; the forward pass follows the true store,
so the result is exact per site, and a site keeps its input plan where that is cheaper.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from services.bidding.domain.inputs import BoolArray, Fleet, FloatArray, IntArray
from services.bidding.domain.sim import SimPlan, initial_age

Float32Array = npt.NDArray[np.float32]

GRID_LEVELS = 33
_GRID = np.arange(GRID_LEVELS, dtype=np.float32)
INFEASIBLE_EUR = 1.0e6  # cost of a rule broken (finite so the cost-to-go can still be interpolated)
CHUNK_SITES = 500  # sites per dynamic programme: its tables (ages × sites × levels) stay in cache


@dataclass(frozen=True)
class Requirement:
    """Quarters in which a site must stay up-capable (running past its minimum run) or down-capable."""

    up: BoolArray  # (n, T)
    down: BoolArray  # (n, T)


def site_cost_eur(fleet: Fleet, spot: FloatArray, plan: SimPlan, penalty_eur_per_kwh: float) -> FloatArray:
    """Return each site's energy cost: HP at spot + boiler + end top-up + comfort penalty, (n,)."""
    hp = (plan.on * fleet.power_kw[:, None] * spot).sum(axis=1) / 4000.0
    gas = (plan.gas_kwh * fleet.balance).sum(axis=1) / 1000.0
    topup = plan.topup_kwh * fleet.balance[:, -1] / 1000.0
    result: FloatArray = hp + gas + topup + penalty_eur_per_kwh * plan.overflow_kwh.sum(axis=1)
    return result


def replay(fleet: Fleet, on: BoolArray) -> SimPlan:
    """Return the plan implied by given on/off decisions (ages, boiler heat, stores, overflow, top-up)."""
    n, horizon = on.shape
    age = initial_age(fleet)
    before = fleet.on0.copy()
    storage = np.minimum(fleet.storage0_kwh, fleet.storage_kwh).copy()
    plan_age = np.zeros((n, horizon), dtype=np.int64)
    gas = np.zeros((n, horizon))
    overflow = np.zeros((n, horizon))
    stored = np.zeros((n, horizon + 1))
    stored[:, 0] = storage
    for t in range(horizon):
        switched = on[:, t] != before
        plan_age[:, t] = np.where(switched, 0, age)
        age = np.where(switched, 1, age + 1)
        before = on[:, t]
        net = storage + (fleet.power_kw * on[:, t] - fleet.demand_kw[:, t]) / 4.0
        gas[:, t] = np.maximum(0.0, -net)
        overflow[:, t] = np.maximum(0.0, net - fleet.storage_kwh)
        storage = np.clip(net, 0.0, fleet.storage_kwh)
        stored[:, t + 1] = storage
    topup = np.maximum(0.0, np.minimum(fleet.storage0_kwh, fleet.storage_kwh) - storage)
    return SimPlan(on.copy(), plan_age, gas, stored, overflow, topup)


def improve(
    fleet: Fleet,
    spot: FloatArray,
    plan: SimPlan,
    requirement: Requirement,
    penalty_eur_per_kwh: float,
    budget_s: float = math.inf,
    only: BoolArray | None = None,
    prefer_cheaper: bool = True,
) -> SimPlan:
    """Re-plan eligible sites by dynamic programming; a site keeps its input plan where that is cheaper.

    Sites go in chunks, those with the most boiler heat and end top-up first, until the time budget
    would be exceeded; the rest (and those not in `only`) keep their input plan. With
    prefer_cheaper=False the DP's plan replaces the input plan wherever it keeps every rule and
    requirement, cheaper or not (requirements the input plan does not meet).
    """
    began = time.perf_counter()
    wanted = fleet.online & (fleet.max_starts_h >= 2) & (True if only is None else only)
    eligible = np.flatnonzero(wanted)
    waste = (plan.gas_kwh * fleet.balance).sum(axis=1) + plan.topup_kwh * fleet.balance[:, -1]
    eligible = eligible[np.argsort(-waste[eligible], kind="stable")]
    on = plan.on.copy()
    slowest = 0.0
    for first in range(0, eligible.size, CHUNK_SITES):
        if time.perf_counter() - began + slowest > budget_s:
            break
        chunk_began = time.perf_counter()
        idx = eligible[first : first + CHUNK_SITES]
        on[idx] = _dp(_Sites.of(fleet, spot, idx, requirement))
        slowest = max(slowest, time.perf_counter() - chunk_began)
    candidate = replay(fleet, on)
    # a site whose new plan is not cheaper (grid error) or breaks a requirement keeps its input plan
    better = (
        site_cost_eur(fleet, spot, candidate, penalty_eur_per_kwh)
        < site_cost_eur(fleet, spot, plan, penalty_eur_per_kwh) - 1e-9
    )
    if not prefer_cheaper:
        better = (candidate.on != plan.on).any(axis=1)
    better &= _meets(fleet, candidate, requirement)
    better &= candidate.overflow_kwh.sum(axis=1) <= plan.overflow_kwh.sum(axis=1) + 1e-9
    return replay(fleet, np.where(better[:, None], candidate.on, plan.on))


def _meets(fleet: Fleet, plan: SimPlan, requirement: Requirement) -> BoolArray:
    """True for sites whose plan keeps every required capability."""
    up = plan.on & (plan.age >= fleet.min_run_q[:, None])
    down = ~plan.on & (plan.age >= fleet.lockout_q[:, None])
    broken: BoolArray = (requirement.up & ~up) | (requirement.down & ~down)
    result: BoolArray = np.logical_not(broken.any(axis=1))
    return result


@dataclass(frozen=True)
class _Sites:
    """The columns of one chunk of sites the dynamic programme needs."""

    power: FloatArray
    demand: FloatArray
    balance: FloatArray
    spot: FloatArray
    cap: FloatArray
    start: FloatArray
    min_run: IntArray
    lockout: IntArray
    on0: BoolArray
    age0: IntArray
    need_up: BoolArray
    need_down: BoolArray

    @classmethod
    def of(cls, fleet: Fleet, spot: FloatArray, idx: IntArray, req: Requirement) -> _Sites:
        """Select the chunk's columns."""
        return cls(
            power=fleet.power_kw[idx],
            demand=fleet.demand_kw[idx],
            balance=fleet.balance[idx],
            spot=spot[idx],
            cap=fleet.storage_kwh[idx],
            start=np.minimum(fleet.storage0_kwh[idx], fleet.storage_kwh[idx]),
            min_run=fleet.min_run_q[idx],
            lockout=fleet.lockout_q[idx],
            on0=fleet.on0[idx],
            age0=initial_age(fleet)[idx],
            need_up=req.up[idx],
            need_down=req.down[idx],
        )


def _dp(s: _Sites) -> BoolArray:
    """Backward cost-to-go over (mode, age, store level), then a forward pass on the true store."""
    # --- data: ages from the lowest initial one up to the longest rule (older is all the same) ----------
    n, horizon = s.demand.shape
    top = int(max(1, s.min_run.max(initial=1), s.lockout.max(initial=1)))
    low = int(min(1, np.clip(s.age0, None, top).min(initial=1)))
    ages = np.arange(low, top + 1)
    levels = _GRID[None, :] / (GRID_LEVELS - 1) * s.cap[:, None]  # (n, G) kWh
    step = np.maximum(s.cap / (GRID_LEVELS - 1), 1e-9)
    # value[t][mode, age, site, level]; mode 0 = off, 1 = on
    value = np.empty((horizon + 1, 2, ages.size, n, GRID_LEVELS), dtype=np.float32)
    value[horizon] = (np.maximum(0.0, s.start[:, None] - levels) * s.balance[:, -1:] / 1000.0)[None, None]
    # --- backward ---------------------------------------------------------------------------------
    for t in range(horizon - 1, -1, -1):
        ahead = [_ahead(s, value[t + 1, mode], step, t, mode) for mode in (0, 1)]
        value[t] = _choose_all(s, ahead, ages, top, t)
    # --- forward on the true store ----------------------------------------------------------------
    on = np.zeros((n, horizon), dtype=np.bool_)
    mode = s.on0.astype(np.int64)
    age = np.clip(s.age0, low, top)
    store = s.start.copy()
    for t in range(horizon):
        best = np.full(n, np.inf)
        choice = mode.copy()
        for action in (0, 1):
            switch: BoolArray = mode != action
            allowed = ~switch | (age >= np.where(mode == 1, s.min_run, s.lockout))
            new_age = np.where(switch, 1, np.minimum(age + 1, top))
            immediate, after, broken = _step(s, store, t, action)
            broken = broken | _required_broken(s, t, action, switch, age)
            cost = immediate + _interp(value[t + 1, action], new_age - low, after, step)
            cost = np.where(allowed & ~broken, cost, np.inf)
            take = cost < best
            best = np.where(take, cost, best)
            choice = np.where(take, action, choice)
        stuck = ~np.isfinite(best)
        choice = np.where(stuck, mode, choice)  # cannot happen from a feasible input plan; kept safe
        switch = choice != mode
        age = np.where(switch, 1, np.minimum(age + 1, top))
        mode = choice
        on[:, t] = choice == 1
        _, store, _ = _step(s, store, t, choice)
    return on


def _step(
    s: _Sites, store: FloatArray, t: int, action: int | IntArray
) -> tuple[FloatArray, FloatArray, BoolArray]:
    """Immediate cost, next store and overflow of running (1) or not (0) from the true store."""
    running = np.asarray(action, dtype=np.float64)
    net = store + (s.power * running - s.demand[:, t]) / 4.0
    gas = np.maximum(0.0, -net)
    cost: FloatArray = s.spot[:, t] * s.power * running / 4000.0 + gas * s.balance[:, t] / 1000.0
    overflow: BoolArray = net > s.cap + 1e-9
    return cost, np.clip(net, 0.0, s.cap), overflow


def _required_broken(s: _Sites, t: int, action: int, switch: BoolArray, age: IntArray) -> BoolArray:
    """True where this decision loses a capability the site must keep in quarter t."""
    if action == 1:
        kept = ~switch & (age >= s.min_run)
        result: BoolArray = s.need_down[:, t] | (s.need_up[:, t] & ~kept)
    else:
        kept = ~switch & (age >= s.lockout)
        result = s.need_up[:, t] | (s.need_down[:, t] & ~kept)
    return result


def _interp(value: Float32Array, age_idx: IntArray, store: FloatArray, step: FloatArray) -> FloatArray:
    """Cost-to-go at each site's own (age, store), linear between grid levels."""
    rows = np.arange(store.shape[0])
    pos = np.clip(store / step, 0.0, GRID_LEVELS - 1)
    lo = np.minimum(pos.astype(np.int64), GRID_LEVELS - 2)
    w = pos - lo
    table = value[age_idx, rows]
    low_value, high_value = table[rows, lo], table[rows, lo + 1]
    high_value = np.where(high_value >= INFEASIBLE_EUR / 2, low_value, high_value)
    result: FloatArray = (1 - w) * low_value + w * high_value
    return result


def _ahead(s: _Sites, after: Float32Array, step: FloatArray, t: int, action: int) -> Float32Array:
    """For running (1) or not (0) in quarter t from every grid level: immediate cost + cost-to-go per age.

    Returns the cost (A, n, G), INFEASIBLE_EUR more where the store would leave the band at the top.
    The store moves by the same amount from every level: one shift in grid units per site.
    """
    n = step.shape[0]
    shift = ((s.power * action - s.demand[:, t]) / 4.0 / step).astype(np.float32)  # (n,) in levels
    pos = _GRID[None, :] + shift[:, None]  # (n, G)
    here = np.maximum(-pos, np.float32(0.0))
    here *= (step * s.balance[:, t] / 1000.0).astype(np.float32)[:, None]  # boiler below the band
    here += (s.spot[:, t] * s.power * action / 4000.0).astype(np.float32)[:, None]
    here += np.float32(INFEASIBLE_EUR) * (pos > GRID_LEVELS - 1 + 1e-4)
    inside = np.clip(pos, np.float32(0.0), np.float32(GRID_LEVELS - 1))
    lo = np.minimum(inside.astype(np.int64), GRID_LEVELS - 2)
    w = inside - lo
    flat = after.reshape(after.shape[0], n * GRID_LEVELS)
    where = (lo + (np.arange(n) * GRID_LEVELS)[:, None]).ravel()
    cost: Float32Array = np.take(flat, where, axis=1).reshape(after.shape)
    high = np.take(flat, where + 1, axis=1).reshape(after.shape)
    # a level above that breaks a rule (overflow in a minimum run) must not price the feasible level
    # below it: the forward pass checks the true store, so the lower neighbour's value stands
    np.copyto(high, cost, where=high >= INFEASIBLE_EUR / 2)
    high -= cost
    high *= w[None]
    cost += high
    cost += here[None]
    return cost


def _choose_all(s: _Sites, ahead: list[Float32Array], ages: IntArray, top: int, t: int) -> Float32Array:
    """Cost-to-go at quarter t for every (mode, age): the cheaper allowed action."""
    n = s.power.shape[0]
    low = int(ages[0])
    result = np.empty((2, ages.size, n, GRID_LEVELS), dtype=np.float32)
    for mode in (0, 1):
        limit = s.min_run if mode == 1 else s.lockout
        for k, age in enumerate(ages):
            ages_vec = np.full(n, int(age), dtype=np.int64)
            for action in (0, 1):
                switch = np.full(n, action != mode)
                new_age = 1 if action != mode else min(int(age) + 1, top)
                allowed = ~switch | (ages_vec >= limit)
                broken = ~allowed | _required_broken(s, t, action, switch, ages_vec)
                option = ahead[action][new_age - low]
                if broken.any():
                    option = option + (np.float32(INFEASIBLE_EUR) * broken)[:, None]
                if action == 0:
                    result[mode, k] = option
                else:
                    np.minimum(result[mode, k], option, out=result[mode, k])
    return result


def release(
    fleet: Fleet,
    kept: SimPlan,
    free: SimPlan,
    saving_eur: FloatArray,
    held_mw: dict[str, FloatArray],
    z: float,
) -> BoolArray:
    """Sites that may follow their free plan while the pool still guarantees every held MW.

    The margin rule's mean and variance are sums over sites, so swapping one site's contribution is
    exact; sites are taken by saving, largest first, and one is released only if every held quarter of
    its area keeps μ − z·σ ≥ the MW held, up and down.
    """
    released = np.zeros(fleet.size, dtype=np.bool_)
    delivered = fleet.response * fleet.power_kw / 1000.0
    mean_mw = fleet.availability * delivered
    var_mw2 = fleet.availability * (1 - fleet.availability) * delivered**2
    areas = np.array(fleet.area)
    for area, held in held_mw.items():
        rows = np.flatnonzero((areas == area) & fleet.online & (saving_eur > 1e-6))
        quarters = np.flatnonzero(held > 0)
        if rows.size == 0 or quarters.size == 0:
            continue
        members = (areas == area) & fleet.online
        sums = []
        for capable in (_up(fleet, kept), _down(fleet, kept)):
            sums.append(
                [
                    mean_mw[members] @ capable[members][:, quarters],
                    var_mw2[members] @ capable[members][:, quarters],
                ]
            )
        free_caps = (_up(fleet, free), _down(fleet, free))
        kept_caps = (_up(fleet, kept), _down(fleet, kept))
        for i in rows[np.argsort(-saving_eur[rows], kind="stable")]:
            trial = []
            for k in (0, 1):
                change = free_caps[k][i, quarters].astype(np.float64) - kept_caps[k][i, quarters]
                trial.append((sums[k][0] + mean_mw[i] * change, sums[k][1] + var_mw2[i] * change))
            if all(
                bool(np.all(m - z * np.sqrt(np.maximum(v, 0.0)) >= held[quarters] - 1e-9)) for m, v in trial
            ):
                released[i] = True
                sums = [[m, v] for m, v in trial]
    return released


def _up(fleet: Fleet, plan: SimPlan) -> BoolArray:
    result: BoolArray = plan.on & (plan.age >= fleet.min_run_q[:, None])
    return result


def _down(fleet: Fleet, plan: SimPlan) -> BoolArray:
    result: BoolArray = ~plan.on & (plan.age >= fleet.lockout_q[:, None])
    return result
