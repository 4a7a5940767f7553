"""An independent checker of plans and bids (plain loops, none of the planner's code), and its own tests.

Other bidding tests import `check` and assert it finds nothing wrong with the solver's output.
"""

from __future__ import annotations

import math

import numpy as np

from services.bidding.domain.inputs import Fleet, Market
from services.bidding.domain.planner import PlanOutcome

Z = 2.326


def _run_starts(on: list[bool], on0: bool, restrict0: int, limit_on: int, limit_off: int) -> list[int]:
    """For each quarter, when the current state began (negative: before the horizon)."""
    began = []
    current = (restrict0 - (limit_on if on0 else limit_off)) if restrict0 > 0 else -10_000
    state = on0
    for t, value in enumerate(on):
        if value != state:
            state, current = value, t
        began.append(current)
    return began


def site_violations(fleet: Fleet, i: int, on: np.ndarray) -> list[str]:
    """Minimum run, lock-out, starts per hour and comfort of one site's plan."""
    problems = []
    m, lock, k = int(fleet.min_run_q[i]), int(fleet.lockout_q[i]), int(fleet.max_starts_h[i])
    seq = [bool(v) for v in on]
    prev = bool(fleet.on0[i])
    prev_began = int(fleet.restrict0_q[i]) - (m if prev else lock) if fleet.restrict0_q[i] > 0 else -10_000
    for t, value in enumerate(seq):
        if value != prev:
            held = t - prev_began
            if prev and held < m:
                problems.append(f"{fleet.site_ids[i]} stopped at {t} after {held} < {m} quarters running")
            if not prev and held < lock:
                problems.append(
                    f"{fleet.site_ids[i]} started at {t} after {held} < {lock} quarters locked out"
                )
            prev, prev_began = value, t
    starts = [t for t in range(len(seq)) if seq[t] and (seq[t - 1] if t else bool(fleet.on0[i])) is False]
    for t in starts:
        if sum(1 for s in starts if t - 3 <= s <= t) > k:
            problems.append(f"{fleet.site_ids[i]}: more than {k} starts in the hour ending at {t}")
    level = min(float(fleet.storage0_kwh[i]), float(fleet.storage_kwh[i]))
    for t, value in enumerate(seq):
        level += (float(fleet.power_kw[i]) * value - float(fleet.demand_kw[i, t])) / 4.0
        level = max(level, 0.0)  # the boiler covers any shortfall
        if level > float(fleet.storage_kwh[i]) + 1e-6:
            problems.append(f"{fleet.site_ids[i]} above the comfort band at quarter {t}")
            level = float(fleet.storage_kwh[i])
    return problems


def _began_all(fleet: Fleet, on: np.ndarray) -> list[list[int]]:
    return [
        _run_starts(
            [bool(v) for v in on[i]],
            bool(fleet.on0[i]),
            int(fleet.restrict0_q[i]),
            int(fleet.min_run_q[i]),
            int(fleet.lockout_q[i]),
        )
        for i in range(fleet.size)
    ]


def guaranteed(fleet: Fleet, on: np.ndarray, began: list[list[int]], area: str, t: int, up: bool) -> float:
    """μ − z·σ in MW of the online sites of one area that can switch in quarter t (plain loop)."""
    mean = var = 0.0
    for i in range(fleet.size):
        if fleet.area[i] != area or not fleet.online[i] or bool(on[i, t]) != up:
            continue
        need = int(fleet.min_run_q[i]) if up else int(fleet.lockout_q[i])
        if t - began[i][t] < need:
            continue
        mw = fleet.response[i] * fleet.power_kw[i] / 1000.0
        a = fleet.availability[i]
        mean += a * mw
        var += a * (1 - a) * mw * mw
    return max(0.0, mean - Z * math.sqrt(var))


def check(fleet: Fleet, market: Market, outcome: PlanOutcome) -> list[str]:
    """Every rule the plan and its bids must respect; returns the violations (empty: all good)."""
    on = outcome.plan.on
    began = _began_all(fleet, on)
    problems = []
    for i in range(fleet.size):
        problems += site_violations(fleet, i, on[i])
    for bid in outcome.capacity_bids:
        rule = market.products[bid.area]
        if abs(bid.capacity_mw * 10 - round(bid.capacity_mw * 10)) > 1e-6:
            problems.append(f"bid {bid} not in 0.1 MW steps")
        if bid.capacity_mw < rule.min_mw - 1e-9:
            problems.append(f"bid {bid} below the minimum {rule.min_mw}")
        if bid.last - bid.first != rule.period_hours * 4:
            problems.append(f"bid {bid} does not cover one product period")
        for t in range(bid.first, bid.last):
            for up in (True, False):
                have = guaranteed(fleet, on, began, bid.area, t, up)
                if have < bid.capacity_mw - 1e-9:
                    problems.append(
                        f"quarter {t} {'up' if up else 'down'}: {have:.3f} MW < bid {bid.capacity_mw}"
                    )
    held: dict[tuple[str, int], float] = {}
    for bid in outcome.capacity_bids:
        for t in range(bid.first, bid.last):
            held[(bid.area, t)] = bid.capacity_mw
    for e in outcome.energy_bids:
        if e.capacity_mw < market.mfrr_min_mw - 1e-9:
            problems.append(f"energy bid {e} below {market.mfrr_min_mw} MW")
        have = guaranteed(fleet, on, began, e.area, e.quarter, e.direction == "up")
        if e.capacity_mw + held.get((e.area, e.quarter), 0.0) > have + 1e-9:
            problems.append(f"energy bid {e} exceeds what is left after FCR ({have:.3f} MW)")
    return problems


def test_checker_finds_a_short_run_and_a_missing_lockout() -> None:
    """The checker itself catches violations (so an empty report means something)."""
    from services.bidding.domain.inputs import SiteInput

    site = SiteInput(
        site_id="s",
        area="DK1",
        hp_power_kw=3.0,
        demand_kw=(1.0,) * 6,
        balance_eur_per_mwh=(100.0,) * 6,
        storage_kwh=10.0,
        storage0_kwh=5.0,
        min_run_quarters=2,
        lockout_quarters=2,
    )
    fleet = Fleet.from_sites([site])
    short_run = np.array([True, False, False, False, False, False])
    assert any("stopped at 1" in p for p in site_violations(fleet, 0, short_run))
    quick_restart = np.array([True, True, False, True, True, True])
    assert any("started at 3" in p for p in site_violations(fleet, 0, quick_restart))
    overheat = Fleet.from_sites([SiteInput(**{**site.__dict__, "storage0_kwh": 9.9})])
    assert any("comfort" in p for p in site_violations(overheat, 0, np.array([True] * 6)))
    ok = np.array([True, True, False, False, True, True])
    assert site_violations(fleet, 0, ok) == []
