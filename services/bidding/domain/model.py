"""The optimiser (OR-Tools linear solver, HiGHS): how many units of each cluster run each quarter.

With integer_units it is a MIP over exact unit counts (per-site model when clusters have one unit each);
by default a fluid LP over counts, whose targets the per-site simulator turns into integral on/off
decisions with rotation, and whose optimum is a lower bound for judging the realised plan.

Each cluster is a count of identical units: r = running, s = started, x = stopped per quarter.
Minimum run and lock-out become window sums over starts and stops (exact for identical units),
heat is an aggregate thermal store per cluster fed by HP and boiler, and symmetric reserve per
area and product period is bounded by the up- and down-capable counts of every quarter in it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
from ortools.linear_solver import pywraplp

from services.bidding.domain.clusters import Clusters
from services.bidding.domain.inputs import FloatArray, Market, Options, Period, periods

Var: TypeAlias = Any  # pywraplp.Variable (the wrapper ships no type hints)


class SolveFailedError(RuntimeError):
    """The solver found no usable solution (infeasible, timed out empty, or abnormal)."""


@dataclass(frozen=True)
class ModelSolution:
    """What the solver decided, with its quality."""

    target_on: FloatArray  # (C, T) running units per cluster
    store_kwh: FloatArray  # (C, T) pooled thermal store at each quarter's end
    status: str
    objective_eur: float
    bound_eur: float
    solve_s: float
    reserve_steps: dict[tuple[str, int], float]  # (area, first quarter) -> 0.1 MW steps

    @property
    def gap(self) -> float:
        """Return the relative gap between objective and bound."""
        return abs(self.objective_eur - self.bound_eur) / max(1.0, abs(self.objective_eur))


@dataclass
class _Vars:
    run: list[list[Var]]
    start: list[list[Var]]
    stop: list[list[Var]]
    store: list[list[Var]]
    gas: list[list[Var]]
    spill: list[list[Var]]


def solve(
    clusters: Clusters, market: Market, options: Options, *, with_reserve: bool = True
) -> ModelSolution:
    """Build, solve and extract the cluster model; raise SolveFailedError without a solution."""
    # --- data -----------------------------------------------------------------------------------
    horizon = market.quarters
    solver = pywraplp.Solver.CreateSolver(options.solver)
    if solver is None:
        raise SolveFailedError(f"solver {options.solver} is not available")
    if not options.verbose:
        solver.SuppressOutput()
    # --- variables ------------------------------------------------------------------------------
    v = _variables(solver, clusters, horizon, options.integer_units)
    # --- constraints ----------------------------------------------------------------------------
    for c in range(clusters.count):
        _unit_rules(solver, clusters, v, c, horizon)
        _heat(solver, clusters, v, c, horizon)
    reserve = _reserve(solver, clusters, market, options, v) if with_reserve else {}
    # --- objective ------------------------------------------------------------------------------
    _objective(solver, clusters, market, options, v, reserve)
    # --- solve ----------------------------------------------------------------------------------
    solver.SetTimeLimit(int(options.time_limit_s * 1000))
    params = pywraplp.MPSolverParameters()
    params.SetDoubleParam(params.RELATIVE_MIP_GAP, options.relative_gap)
    began = time.perf_counter()
    status = solver.Solve(params)
    elapsed = time.perf_counter() - began
    if status not in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
        raise SolveFailedError(f"solver status {_STATUS.get(status, status)} after {elapsed:.1f} s")
    # --- extract --------------------------------------------------------------------------------
    target = np.array([[var.solution_value() for var in row] for row in v.run]).reshape(-1, horizon)
    store = np.array([[var.solution_value() for var in row] for row in v.store]).reshape(-1, horizon)
    steps = {key: var.solution_value() for key, (var, _) in reserve.items()}
    objective = solver.Objective()
    return ModelSolution(
        target_on=target,
        store_kwh=store,
        status=_STATUS.get(status, str(status)),
        objective_eur=objective.Value(),
        bound_eur=objective.BestBound(),
        solve_s=elapsed,
        reserve_steps=steps,
    )


_STATUS = {
    pywraplp.Solver.OPTIMAL: "optimal",
    pywraplp.Solver.FEASIBLE: "feasible",
    pywraplp.Solver.INFEASIBLE: "infeasible",
    pywraplp.Solver.UNBOUNDED: "unbounded",
    pywraplp.Solver.ABNORMAL: "abnormal",
    pywraplp.Solver.NOT_SOLVED: "not_solved",
    99: "unknown",
}


def _variables(solver: pywraplp.Solver, cl: Clusters, horizon: int, integer: bool) -> _Vars:
    inf = solver.infinity()
    v = _Vars([], [], [], [], [], [])
    for c in range(cl.count):
        n = float(cl.size[c])
        make = solver.IntVar if integer else solver.NumVar
        v.run.append([make(0, n, f"run[{c},{t}]") for t in range(horizon)])
        v.start.append([make(0, n, f"start[{c},{t}]") for t in range(horizon)])
        v.stop.append([make(0, n, f"stop[{c},{t}]") for t in range(horizon)])
        cap = n * float(cl.storage_kwh[c])
        v.store.append([solver.NumVar(0, cap, f"store[{c},{t}]") for t in range(horizon)])
        v.gas.append([solver.NumVar(0, inf, f"gas[{c},{t}]") for t in range(horizon)])
        v.spill.append([solver.NumVar(0, inf, f"spill[{c},{t}]") for t in range(horizon)])
    return v


def _pre_on(cl: Clusters, c: int, t: int) -> float:
    """Units still in a minimum run begun before the horizon."""
    return cl.still_running(c, t)


def _pre_off(cl: Clusters, c: int, t: int) -> float:
    """Units still locked out after a stop before the horizon."""
    return cl.still_locked(c, t)


def _unit_rules(solver: pywraplp.Solver, cl: Clusters, v: _Vars, c: int, horizon: int) -> None:
    """Flow of units, minimum run, lock-out and starts per hour."""
    n = float(cl.size[c])
    m, lock, k = int(cl.min_run_q[c]), int(cl.lockout_q[c]), int(cl.max_starts_h[c])
    run, start, stop = v.run[c], v.start[c], v.stop[c]
    for t in range(horizon):
        before = run[t - 1] if t else float(cl.on0[c])
        solver.Add(run[t] == before + start[t] - stop[t], f"flow[{c},{t}]")
        started = solver.Sum(start[max(0, t - m + 1) : t + 1]) if m else 0
        solver.Add(run[t] >= started + _pre_on(cl, c, t), f"min_run[{c},{t}]")
        stopped = solver.Sum(stop[max(0, t - lock + 1) : t + 1]) if lock else 0
        solver.Add(n - run[t] >= stopped + _pre_off(cl, c, t), f"lockout[{c},{t}]")
        if t >= 3:
            solver.Add(solver.Sum(start[t - 3 : t + 1]) <= k * n, f"starts[{c},{t}]")


def _heat(solver: pywraplp.Solver, cl: Clusters, v: _Vars, c: int, horizon: int) -> None:
    """Thermal store: HP and boiler heat in, demand out, spill beyond the band penalised."""
    n = float(cl.size[c])
    p = float(cl.power_kw[c])
    start_level = n * float(cl.storage0_kwh[c])
    for t in range(horizon):
        before = v.store[c][t - 1] if t else start_level
        demand = n * float(cl.demand_kw[c, t]) / 4.0
        solver.Add(
            v.store[c][t] == before + (p * v.run[c][t] + v.gas[c][t]) / 4.0 - demand - v.spill[c][t],
            f"heat[{c},{t}]",
        )
    solver.Add(v.store[c][horizon - 1] >= start_level, f"end_store[{c}]")


def up_expr(cl: Clusters, v: _Vars, c: int, t: int) -> Any:
    """Running units past their minimum run in quarter t."""
    m = int(cl.min_run_q[c])
    recent = v.start[c][max(0, t - m + 1) : t + 1] if m else []
    return v.run[c][t] - sum(recent) - _pre_on(cl, c, t)


def down_expr(cl: Clusters, v: _Vars, c: int, t: int) -> Any:
    """Idle units past their lock-out in quarter t."""
    lock = int(cl.lockout_q[c])
    recent = v.stop[c][max(0, t - lock + 1) : t + 1] if lock else []
    return float(cl.size[c]) - v.run[c][t] - sum(recent) - _pre_off(cl, c, t)


def _reserve(
    solver: pywraplp.Solver, cl: Clusters, market: Market, options: Options, v: _Vars
) -> dict[tuple[str, int], tuple[Var, Period]]:
    """Symmetric reserve: B steps per period, ≥ the minimum or zero, covered in every quarter."""
    result: dict[tuple[str, int], tuple[Var, Period]] = {}
    for area in sorted(set(cl.area)):
        members = [c for c in range(cl.count) if cl.area[c] == area]
        prices = market.reserve_eur_per_mw_h.get(area)
        if prices is None:
            continue
        fleet_mw = sum(float(cl.size[c] * cl.power_kw[c]) for c in members) / 1000
        max_steps = min(options.max_bid_mw, fleet_mw / 2) * 10
        for period in periods(market, area):
            if float(np.mean(prices[period.first : period.last])) <= 0:
                continue
            # continuous steps: the bid is rounded from the per-site plan; "bid or not" is binary
            steps = solver.NumVar(0, max_steps, f"bid[{area},{period.first}]")
            if options.integer_units:
                # "bid ≥ minimum or no bid" as a binary; in the fluid (LP) model the per-site plan decides it
                chosen = solver.BoolVar(f"bid_on[{area},{period.first}]")
                min_steps = round(period.product.min_mw / period.product.step_mw)
                solver.Add(steps >= min_steps * chosen, f"bid_min[{area},{period.first}]")
                solver.Add(steps <= max_steps * chosen, f"bid_max[{area},{period.first}]")
            coef = _capability_kw(cl, options, members)
            for t in period.quarters:
                # in kW against 100 kW per 0.1 MW step: coefficients near 1 keep the LP well scaled
                up = solver.Sum([w * up_expr(cl, v, c, t) for w, c in zip(coef, members, strict=True)])
                down = solver.Sum([w * down_expr(cl, v, c, t) for w, c in zip(coef, members, strict=True)])
                solver.Add(up >= 100.0 * steps, f"sym_up[{area},{t}]")
                solver.Add(down >= 100.0 * steps, f"sym_down[{area},{t}]")
            result[(area, period.first)] = (steps, period)
    return result


def _capability_kw(cl: Clusters, options: Options, members: list[int]) -> list[float]:
    """Guaranteed kW per capable unit of each cluster.

    Planning: the mean response × power less a flat derate for the margin. Relaxation (clusters built
    relaxed=True): μ − z·σ with σ = √L, L the variance of the capable units, is at most μ − z·L/√L_max
    (√ lies above its chord on [0, L_max]), so the best response and the least variance per kW bound it.
    """
    if cl.variance_per_kw is None or cl.variance_total_kw2 is None:
        return [(1 - options.model_derate) * cl.weight[c] * cl.power_kw[c] for c in members]
    total = cl.variance_total_kw2.get(cl.area[members[0]], 0.0) if members else 0.0
    chord = options.z / np.sqrt(total) if total > 0 else 0.0
    return [float(cl.power_kw[c] * (cl.weight[c] - chord * cl.variance_per_kw[c])) for c in members]


def _objective(
    solver: pywraplp.Solver,
    cl: Clusters,
    market: Market,
    options: Options,
    v: _Vars,
    reserve: dict[tuple[str, int], tuple[Var, Period]],
) -> None:
    """Energy cost (HP at spot, boiler at the balance price) + comfort penalty − reserve revenue."""
    terms = []
    for c in range(cl.count):
        spot = market.spot[cl.area[c]]
        p = float(cl.power_kw[c])
        for t in range(market.quarters):
            terms.append(float(spot[t]) * p / 4000.0 * v.run[c][t])
            terms.append(float(cl.balance[c, t]) / 4000.0 * v.gas[c][t])
            terms.append(options.comfort_penalty_eur_per_kwh * v.spill[c][t])
    for (area, _), (steps, period) in reserve.items():
        price = float(np.mean(market.reserve_eur_per_mw_h[area][period.first : period.last]))
        terms.append(-price * 0.1 * period.hours * steps)
    solver.Minimize(solver.Sum(terms))
