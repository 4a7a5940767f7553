"""Planning and bidding at scale: sites × 96 quarters, solve time, gaps, bid MW, against a greedy baseline.

For each fleet size the full job runs --repeats times (cluster → LP solve with a time limit → per-site
simulation with rotation → per-site re-optimisation (DP) keeping the bids' capability → symmetric FCR and
mFRR bids → energy-only re-solve for the bid price) and the median is printed with:
- solver gap: the solver's own |objective − bound| / |objective| (0 for an LP solved to optimality);
- gap to the model: (objective of the published per-site plan − the cluster LP's optimum) / |objective|;
  the cluster model is what the solver bounds, but it is no proof for the per-site problem (its derate
  is conservative, its pooled store optimistic), so the plan may even beat it;
- gap to the proven bound: against the optimum of the relaxed cluster LP (`relaxation_bound`: pooled
  heat, shortest rules, cheapest boiler, best response, the margin's chord), below every checked plan;
- followed: the same before the per-site re-optimisation (the cluster targets followed with rotation);
- bid MW: sum of capacity bids over the day's periods, and the same for the greedy baseline (HP whenever
  spot < balance price, bids from what that leaves); objective = energy cost − reserve revenue (EUR).

Then, on small single-area fleets (--small villas, 3 seeds), the exact per-site MIP (SCIP, integer units,
"bid ≥ minimum or none" binary, 0.2 % gap) is the reference: the clustered plan's loss against the MIP's
own plan and its gap to the MIP's proven bound. --lumpy adds ten 30–150 kW units over 4 hours with
reserve prices × 5, where holding reserve needs whole units (the exact MIP then hits its time limit).

Run: `python -m benchmarks.bidding_scale [--sites 2200,10000,100000] [--repeats 3] [--small 16] [--lumpy]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import replace
from datetime import UTC, datetime

from services.bidding.domain.inputs import Fleet, Market, Options
from services.bidding.domain.planner import PlanOutcome, greedy, plan, relaxation_bound
from services.bidding.domain.synthetic import scaled_site, synthetic_fleet, synthetic_market, synthetic_sites

FIRST = datetime(2026, 11, 22, 23, 0, tzinfo=UTC)
QUARTERS = 96
EXACT = Options(
    time_limit_s=60,
    cluster=False,
    integer_units=True,
    solver="SCIP",
    relative_gap=0.002,
    price_energy_only=False,
    improve_sites=False,
)


def _bid_mw(outcome: PlanOutcome) -> float:
    return round(sum(b.capacity_mw for b in outcome.capacity_bids), 1)


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def run(sites: int, repeats: int, time_limit_s: float) -> None:
    """Plan one fleet size repeatedly and print the medians."""
    fleet = synthetic_fleet(sites, FIRST, QUARTERS, seed=sites)
    market = synthetic_market(FIRST, QUARTERS)
    options = Options(time_limit_s=time_limit_s)
    load_before = _load()
    outcomes, totals = [], []
    for i in range(repeats):
        began = time.perf_counter()
        outcomes.append(plan(fleet, market, options, f"bench-{i}"))
        totals.append(time.perf_counter() - began)
    load_after = _load()
    outcome = outcomes[-1]
    began = time.perf_counter()
    proven = relaxation_bound(fleet, market, options).bound_eur
    bound_s = time.perf_counter() - began
    base = greedy(fleet, market, options)
    model = outcome.model_bound_eur if outcome.model_bound_eur is not None else float("nan")

    def gap(objective: float, bound: float) -> float:
        return (objective - bound) / abs(objective)

    def median(key: str) -> float:
        return statistics.median(o.extra.get(key, 0.0) for o in outcomes)

    followed = outcome.extra.get("followed_objective_eur", outcome.objective_eur)
    gain = (base.objective_eur - outcome.objective_eur) / abs(base.objective_eur)
    runs = ", ".join(f"{t:.1f}" for t in totals)
    solve_s = statistics.median(o.solve_s for o in outcomes)
    print(
        f"{sites:>7} sites | {outcome.clusters:>3} clusters | total {statistics.median(totals):6.1f} s "
        f"(runs {runs}) | solve {solve_s:5.1f} s | per-site DP {median('improve_s'):5.1f} s "
        f"| load {load_before} → {load_after}"
    )
    to_model, to_proven = gap(outcome.objective_eur, model), gap(outcome.objective_eur, proven)
    print(
        f"{'':>7}       | solver gap {outcome.model_gap or 0.0:.4f} | gap to the model {to_model:+.2%} "
        f"(followed {gap(followed, model):+.2%}) | gap to the proven bound {to_proven:+.2%} "
        f"(bound solve {bound_s:.1f} s) | sites re-planned {median('sites_replanned'):.0f}, released "
        f"{median('sites_released'):.0f}"
    )
    print(
        f"{'':>7}       | bid MW {_bid_mw(outcome):7.1f} (greedy {_bid_mw(base):7.1f}) "
        f"| objective {outcome.objective_eur:10.0f} EUR (greedy {base.objective_eur:10.0f}, "
        f"{gain:+.1%} better) | bid price {outcome.bid_price_eur_per_mw_h:.2f} EUR/MW/h "
        f"| mFRR bids {len(outcome.energy_bids)}",
        flush=True,
    )


def _compare(label: str, fleet: Fleet, market: Market, exact_options: Options) -> None:
    began = time.perf_counter()
    exact = plan(fleet, market, exact_options, "exact")
    exact_s = time.perf_counter() - began
    bound = exact.model_bound_eur if exact.model_bound_eur is not None else float("nan")
    began = time.perf_counter()
    clustered = plan(fleet, market, Options(time_limit_s=20), "clustered")
    clustered_s = time.perf_counter() - began
    followed = plan(fleet, market, Options(time_limit_s=20, improve_sites=False), "followed")
    base, mine = exact.objective_eur, clustered.objective_eur
    print(
        f"{label}: per-site MIP {base:.2f} EUR ({exact.status}, solver gap {exact.model_gap or 0:.4f}, "
        f"bound {bound:.2f}, {exact_s:.1f} s, bid MW {_bid_mw(exact)}) | clustered {mine:.2f} "
        f"({clustered.clusters} clusters, {clustered_s:.1f} s, bid MW {_bid_mw(clustered)}): loss "
        f"{(clustered.objective_eur - base) / abs(base):+.2%}, above the bound "
        f"{(clustered.objective_eur - bound) / abs(clustered.objective_eur):+.2%}; without the per-site DP "
        f"{(followed.objective_eur - base) / abs(base):+.2%}",
        flush=True,
    )


def compare_small(sites: int, seeds: int) -> None:
    """Exact per-site MIP against the clustered plan on small single-area villa fleets."""
    market = synthetic_market(FIRST, QUARTERS)
    for seed in range(seeds):
        fleet = Fleet.from_sites(
            [replace(s, area="DK2") for s in synthetic_sites(sites, FIRST, QUARTERS, seed)]
        )
        _compare(f"{sites} villas seed {seed}", fleet, market, EXACT)


def compare_lumpy(seeds: int) -> None:
    """Ten 30–150 kW units, 4 hours, reserve × 5: symmetric bids need whole units switched."""
    quarters = 16
    market = synthetic_market(FIRST, quarters)
    market = replace(market, reserve_eur_per_mw_h={a: v * 5 for a, v in market.reserve_eur_per_mw_h.items()})
    for seed in range(seeds):
        fleet = Fleet.from_sites([scaled_site(s, 30.0) for s in synthetic_sites(10, FIRST, quarters, seed)])
        _compare(f"10 big units seed {seed}", fleet, market, EXACT)


def main() -> None:
    """Parse arguments and run every size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", default="2200,10000", help="Comma-separated fleet sizes.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--time-limit", type=float, default=25.0, help="Solver time limit per solve, s.")
    parser.add_argument(
        "--small", type=int, default=16, help="Villas in the small exact comparison (0: skip)."
    )
    parser.add_argument("--lumpy", action="store_true", help="Add the ten-big-unit reserve comparison.")
    args = parser.parse_args()
    for size in (int(s) for s in args.sites.split(",") if s):
        run(size, args.repeats, args.time_limit)
    if args.small:
        compare_small(args.small, 3)
    if args.lumpy:
        compare_lumpy(3)


if __name__ == "__main__":
    main()
