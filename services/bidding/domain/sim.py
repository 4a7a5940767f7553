"""Per-site plan simulation: turns per-cluster targets (or a greedy rule) into on/off per site and quarter.

Every decision obeys the site's own rules, so the published plan is feasible whatever the optimiser
returned: a switch only after the minimum run / lock-out, at most k starts in any 4 quarters, a start
only with enough thermal headroom for its minimum run, and a forced stop before the house leaves the
comfort band. Units are rotated: the fullest (warmest) running units stop first, the emptiest start first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from services.bidding.domain.inputs import BoolArray, Fleet, FloatArray, IntArray

LONG_AGO = 10_000
SWAP_BAND = 0.15  # share of the store a unit may be off its planned level before it swaps


@dataclass(frozen=True)
class SimPlan:
    """A per-site plan and what it implies, all (n, T) unless noted."""

    on: BoolArray
    age: IntArray  # quarters since the last switch at the start of each quarter
    gas_kwh: FloatArray  # boiler heat in kWh of electric equivalent (heat / COP)
    storage_kwh: FloatArray  # (n, T + 1): thermal storage at each quarter start
    overflow_kwh: FloatArray  # heat beyond the +2 °C band (comfort violation)
    topup_kwh: FloatArray  # (n,): boiler heat to restore the start storage at the end


def initial_age(fleet: Fleet) -> IntArray:
    """Return each site's quarters-in-state at the plan start (min run / lock-out left counted in)."""
    limit = np.where(fleet.on0, fleet.min_run_q, fleet.lockout_q)
    age: IntArray = np.where(fleet.restrict0_q > 0, limit - fleet.restrict0_q, LONG_AGO).astype(np.int64)
    return age


def _headroom_ok(fleet: Fleet, storage: FloatArray, t: int) -> BoolArray:
    """True where a start at t keeps the house inside the band for its whole minimum run."""
    horizon = fleet.quarters
    longest = max(1, int(fleet.min_run_q.max(initial=1)))
    cum = storage.copy()
    ok = np.ones(fleet.size, dtype=np.bool_)
    for j in range(longest):
        if t + j >= horizon:
            break
        cum = cum + (fleet.power_kw - fleet.demand_kw[:, t + j]) / 4.0
        cum = np.maximum(cum, 0.0)
        inside_run = j < np.maximum(fleet.min_run_q, 1)
        ok &= ~inside_run | (cum <= fleet.storage_kwh + 1e-9)
    return ok


def _pick(candidates: BoolArray, group: IntArray, score: FloatArray, wanted: IntArray) -> BoolArray:
    """Choose, per group, the `wanted[group]` candidates with the lowest score."""
    idx = np.flatnonzero(candidates)
    chosen = np.zeros(candidates.shape[0], dtype=np.bool_)
    if idx.size == 0:
        return chosen
    order = idx[np.lexsort((score[idx], group[idx]))]
    groups = group[order]
    first = np.searchsorted(groups, groups, side="left")
    rank = np.arange(order.size) - first
    chosen[order[rank < wanted[groups]]] = True
    return chosen


def simulate(
    fleet: Fleet,
    spot_per_site: FloatArray,
    cluster_of: IntArray | None = None,
    target_on: FloatArray | None = None,
    desired_kwh: FloatArray | None = None,
) -> SimPlan:
    """Simulate the fleet quarter by quarter following cluster targets, or the greedy rule if none.

    desired_kwh (n, T): each site's share of its cluster's planned store at each quarter's end; units
    above their share stop first and units below it start first (by default: the fill fraction).
    """
    n, horizon = fleet.size, fleet.quarters
    on_now = fleet.on0.copy()
    age = initial_age(fleet)
    storage = np.minimum(fleet.storage0_kwh, fleet.storage_kwh).copy()
    recent_starts = np.zeros((n, 4), dtype=np.int64)
    plan_on = np.zeros((n, horizon), dtype=np.bool_)
    plan_age = np.zeros((n, horizon), dtype=np.int64)
    gas = np.zeros((n, horizon))
    overflow = np.zeros((n, horizon))
    stored = np.zeros((n, horizon + 1))
    stored[:, 0] = storage
    if target_on is None or cluster_of is None:
        greedy = np.ones(n, dtype=np.bool_)
    else:
        greedy = ~fleet.online | (cluster_of < 0)
    clusters = 0 if target_on is None else int(target_on.shape[0])
    carry = np.zeros(clusters)  # error diffusion: running units owed to (or by) each cluster so far
    for t in range(horizon):
        want = np.where(fleet.online, spot_per_site[:, t] < fleet.balance[:, t], True)
        may_stop = on_now & (age >= fleet.min_run_q)
        starts_left = recent_starts[:, 1:].sum(axis=1) < fleet.max_starts_h
        may_start = ~on_now & (age >= fleet.lockout_q) & starts_left & _headroom_ok(fleet, storage, t)
        forced = may_stop & (storage + (fleet.power_kw - fleet.demand_kw[:, t]) / 4.0 > fleet.storage_kwh)
        stop = forced | (greedy & may_stop & ~want)
        start = greedy & may_start & want
        if target_on is not None and cluster_of is not None:
            more_stops, more_starts = _follow_targets(
                fleet,
                cluster_of,
                target_on[:, t] + carry,
                on_now,
                storage,
                age,
                may_stop,
                may_start,
                forced,
                greedy,
                None if desired_kwh is None else desired_kwh[:, t],
            )
            stop |= more_stops
            start |= more_starts
        switched = stop | start
        on_now = (on_now & ~stop) | start
        if target_on is not None and cluster_of is not None:
            running = np.bincount(cluster_of[~greedy & on_now], minlength=clusters)[:clusters]
            carry = np.clip(carry + target_on[:, t] - running, -2.0, 2.0)
        age = np.where(switched, 1, age + 1)
        # age is "quarters since switch at quarter start": a switch at t makes age 0 during t
        plan_age[:, t] = np.where(switched, 0, age - 1)
        recent_starts = np.roll(recent_starts, -1, axis=1)
        recent_starts[:, -1] = start
        plan_on[:, t] = on_now
        net = storage + (fleet.power_kw * on_now - fleet.demand_kw[:, t]) / 4.0
        gas[:, t] = np.maximum(0.0, -net)
        overflow[:, t] = np.maximum(0.0, net - fleet.storage_kwh)
        storage = np.clip(net, 0.0, fleet.storage_kwh)
        stored[:, t + 1] = storage
    topup = np.maximum(0.0, np.minimum(fleet.storage0_kwh, fleet.storage_kwh) - storage)
    return SimPlan(plan_on, plan_age, gas, stored, overflow, topup)


def _follow_targets(
    fleet: Fleet,
    cluster_of: IntArray,
    target: FloatArray,
    on_now: BoolArray,
    storage: FloatArray,
    age: IntArray,
    may_stop: BoolArray,
    may_start: BoolArray,
    forced: BoolArray,
    greedy: BoolArray,
    desired: FloatArray | None,
) -> tuple[BoolArray, BoolArray]:
    managed = ~greedy
    clusters = int(target.shape[0])
    group = np.where(managed, cluster_of, clusters)
    on_after_forced = on_now & ~forced & managed
    counts = np.bincount(group[on_after_forced], minlength=clusters + 1)[:clusters]
    goal = np.rint(target).astype(np.int64)
    excess = np.append(np.maximum(0, counts - goal), 0)
    deficit = np.append(np.maximum(0, goal - counts), 0)
    capacity = np.maximum(fleet.storage_kwh, 1e-9)
    fill = storage / capacity
    ahead = fill if desired is None else (storage - desired) / capacity
    stop = _pick(may_stop & ~forced & managed, group, -ahead - age * 1e-6, excess)
    start = _pick(may_start & managed, group, ahead - age * 1e-6, deficit)
    # rotation: a nearly cold idle unit swaps with a well-filled running one (count unchanged), so the
    # cluster's heat stays spread like the optimiser's pooled store assumes
    low, high = (0.3, 0.6) if desired is None else (-SWAP_BAND, SWAP_BAND)
    needy = may_start & ~start & managed & (ahead < low)
    spare = may_stop & ~forced & ~stop & managed & (ahead > high)
    swaps = np.minimum(
        np.bincount(group[needy], minlength=clusters + 1), np.bincount(group[spare], minlength=clusters + 1)
    )
    swaps[-1] = 0
    stop |= _pick(spare, group, -ahead, swaps)
    start |= _pick(needy, group, ahead, swaps)
    return stop, start


def up_capable(fleet: Fleet, plan: SimPlan) -> BoolArray:
    """True where a site runs past its minimum run and may be switched off (online only)."""
    result: npt.NDArray[np.bool_] = plan.on & (plan.age >= fleet.min_run_q[:, None]) & fleet.online[:, None]
    return result


def down_capable(fleet: Fleet, plan: SimPlan) -> BoolArray:
    """True where a site is idle past its lock-out and may be switched on (online only)."""
    result: npt.NDArray[np.bool_] = ~plan.on & (plan.age >= fleet.lockout_q[:, None]) & fleet.online[:, None]
    return result
