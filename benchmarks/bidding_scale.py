"""Planning and bidding at scale: sites × 96 quarters, solve time, gap, bid MW, against a greedy baseline.

For each fleet size the full job runs --repeats times (cluster → LP solve with a time limit →
per-site simulation with rotation → symmetric FCR and mFRR bids → energy-only re-solve for the bid
price) and the median is printed with:
- solver gap: the solver's own |objective − bound| / |objective| (0 for an LP solved to optimality);
- realised gap: (objective of the published per-site plan − solver bound) / |objective|; the bound is
  the cluster LP's optimum, so this includes everything lost by disaggregation and the margin rule;
- bid MW: sum of capacity bids over the day's periods, and the same for the greedy baseline (HP whenever
  spot < balance price, bids from what that leaves); objective = energy cost − reserve revenue (EUR).

Then, on small single-area fleets (--small sites, 3 seeds), the exact per-site MIP (SCIP, integer units,
"bid ≥ minimum or none" binary) is the reference and the realised-objective loss of the clustered LP
(the default at scale), the clustered MIP and the per-site LP is printed.

Run: `python -m benchmarks.bidding_scale [--sites 2200,10000] [--repeats 3] [--time-limit 25] [--small 10]`;
`--sites 100000` for the 100k figure (≈ a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from datetime import UTC, datetime

from services.bidding.domain.inputs import Fleet, Options
from services.bidding.domain.planner import PlanOutcome, greedy, plan
from services.bidding.domain.synthetic import synthetic_fleet, synthetic_market, synthetic_sites

FIRST = datetime(2026, 11, 22, 23, 0, tzinfo=UTC)
QUARTERS = 96


def _bid_mw(outcome: PlanOutcome) -> float:
    return round(sum(b.capacity_mw for b in outcome.capacity_bids), 1)


def run(sites: int, repeats: int, time_limit_s: float) -> None:
    """Plan one fleet size repeatedly and print the medians."""
    fleet = synthetic_fleet(sites, FIRST, QUARTERS, seed=sites)
    market = synthetic_market(FIRST, QUARTERS)
    options = Options(time_limit_s=time_limit_s)
    totals, solves, outcome = [], [], None
    for i in range(repeats):
        began = time.perf_counter()
        outcome = plan(fleet, market, options, f"bench-{i}")
        totals.append(time.perf_counter() - began)
        solves.append(outcome.solve_s)
    assert outcome is not None
    base = greedy(fleet, market, options)
    bound = outcome.model_bound_eur if outcome.model_bound_eur is not None else float("nan")
    realised_gap = (outcome.objective_eur - bound) / abs(outcome.objective_eur)
    gain = (base.objective_eur - outcome.objective_eur) / abs(base.objective_eur)
    print(
        f"{sites:>7} sites | {outcome.clusters:>3} clusters | total {statistics.median(totals):6.1f} s "
        f"| solve {statistics.median(solves):5.1f} s | solver gap {outcome.model_gap or 0.0:.4f} "
        f"| realised gap {realised_gap:.4f} | status {outcome.status}"
    )
    print(
        f"{'':>7}       | bid MW {_bid_mw(outcome):7.1f} (greedy {_bid_mw(base):7.1f}) "
        f"| objective {outcome.objective_eur:10.0f} EUR (greedy {base.objective_eur:10.0f}, "
        f"{gain:+.1%} better) | bid price {outcome.bid_price_eur_per_mw_h:.2f} EUR/MW/h "
        f"| mFRR bids {len(outcome.energy_bids)}"
    )


def compare_small(sites: int, seeds: int) -> None:
    """Exact per-site MIP against clustered LP and clustered MIP on small single-area fleets."""
    market = synthetic_market(FIRST, QUARTERS)
    exact = Options(
        time_limit_s=20, cluster=False, integer_units=True, solver="SCIP", price_energy_only=False
    )
    variants = {
        "clustered LP": Options(time_limit_s=20),
        "clustered MIP": replace(exact, cluster=True),
        "per-site LP": Options(time_limit_s=20, cluster=False),
    }
    for seed in range(seeds):
        fleet = Fleet.from_sites(
            [replace(s, area="DK2") for s in synthetic_sites(sites, FIRST, QUARTERS, seed)]
        )
        reference = plan(fleet, market, exact, "exact")
        base = reference.objective_eur
        losses = ", ".join(
            f"{name} {(plan(fleet, market, options, name).objective_eur - base) / abs(base):+.2%}"
            for name, options in variants.items()
        )
        print(
            f"{sites} sites seed {seed}: per-site MIP {reference.objective_eur:.2f} EUR "
            f"(solver gap {reference.model_gap or 0:.4f}); loss of {losses}"
        )


def main() -> None:
    """Parse arguments and run every size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", default="2200,10000", help="Comma-separated fleet sizes.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--time-limit", type=float, default=25.0, help="Solver time limit per solve, s.")
    parser.add_argument(
        "--small", type=int, default=10, help="Sites in the small exact comparison (0: skip)."
    )
    args = parser.parse_args()
    for size in (int(s) for s in args.sites.split(",")):
        run(size, args.repeats, args.time_limit)
    if args.small:
        compare_small(args.small, 3)


if __name__ == "__main__":
    main()
