"""`hybridpool bidding …` (plans, bids, results, pool sizing) and `hybridpool market …` (scenario, money)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from hybridpool_cli import supervisor

bidding_app = typer.Typer(help="Plans and bids of the running platform's bidding service.")
market_app = typer.Typer(help="The market simulator: scenario and settlement.")
console = Console()
DataDir = Annotated[Path, typer.Option(help="Data directory of the running platform.")]
DEFAULT_DATA = Path(".data")
SCENARIOS = ("quiet", "big_frequency_drop", "long_up_activation")


def register(app: typer.Typer) -> None:
    """Add the `bidding` and `market` command groups."""
    app.add_typer(bidding_app, name="bidding")
    app.add_typer(market_app, name="market")


def service_url(data_dir: Path, name: str) -> str:
    """Return the base URL of a running service, or exit with a clear message."""
    state = supervisor.read_state(data_dir)
    services = state.get("services", []) if state else []
    for svc in services if isinstance(services, list) else []:
        if svc.get("name") == name:
            return f"http://127.0.0.1:{svc['port']}"
    console.print(f"[red]no running {name} service found in {data_dir} (start it with `hybridpool up`)[/]")
    raise typer.Exit(1)


def _call(method: str, url: str, **kwargs: Any) -> Any:
    try:
        response = httpx.request(method, url, timeout=180.0, **kwargs)
    except httpx.HTTPError as exc:
        console.print(f"[red]{url}: {exc}[/]")
        raise typer.Exit(1) from exc
    if response.status_code >= 400:
        console.print(f"[red]{response.status_code}: {response.text}[/]")
        raise typer.Exit(1)
    return response.json()


@bidding_app.command("sizing")
def sizing(data_dir: DataDir = DEFAULT_DATA, as_json: bool = False) -> None:
    """How many sites of the current fleet make the minimum symmetric bid (from the latest plan)."""
    body = _call("GET", service_url(data_dir, "bidding") + "/pool/sizing")
    if as_json:
        console.print_json(json.dumps(body))
        return
    table = Table(title=f"Pool sizing for {body['min_bid_mw']} MW symmetric ({body['sites']} sites)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key in (
        "symmetric_mw_min",
        "symmetric_mw_p10",
        "symmetric_mw_median",
        "sites_needed_all_quarters",
        "sites_needed_90pct_quarters",
        "sites_needed_median_quarter",
        "full_power_sites_needed",
    ):
        table.add_row(key, str(body[key]))
    console.print(table)


@bidding_app.command("plan")
def run_plan(
    data_dir: DataDir = DEFAULT_DATA,
    kind: Annotated[str, typer.Option(help="day_ahead or intraday")] = "day_ahead",
    trigger: Annotated[str | None, typer.Option(help="Job id; the same id never plans twice.")] = None,
) -> None:
    """Run a planning job now and print its summary."""
    params = {"kind": kind} | ({"trigger": trigger} if trigger else {})
    body = _call("POST", service_url(data_dir, "bidding") + "/plan/run", params=params)
    body.pop("hp_on_share_by_quarter", None)
    console.print_json(json.dumps(body))


@bidding_app.command("bids")
def bids(data_dir: DataDir = DEFAULT_DATA) -> None:
    """The latest day-ahead capacity bids."""
    body = _call("GET", service_url(data_dir, "bidding") + "/bids")
    table = Table(title=f"Capacity bids of {body['plan_id']}")
    for col in ("area", "product", "start", "MW", "EUR/MW/h"):
        table.add_column(col)
    for b in body["capacity_bids"]:
        table.add_row(
            b["area"], b["product"], b["start"], f"{b['capacity_mw']:.1f}", f"{b['price_eur_per_mw_h']:.2f}"
        )
    console.print(table)


@bidding_app.command("results")
def results(data_dir: DataDir = DEFAULT_DATA) -> None:
    """Clearing results seen by the bidding service."""
    rows = _call("GET", service_url(data_dir, "bidding") + "/results")
    accepted = [r for r in rows if r["accepted"]]
    console.print(
        f"{len(rows)} results, {len(accepted)} accepted, {sum(r['accepted_mw'] for r in accepted):.1f} MW"
    )


@market_app.command("scenario")
def scenario(
    name: Annotated[str | None, typer.Argument(help=f"One of {', '.join(SCENARIOS)}; omit to show.")] = None,
    data_dir: DataDir = DEFAULT_DATA,
) -> None:
    """Show or choose the market simulator's scenario."""
    base = service_url(data_dir, "market_sim")
    body = _call("PUT", f"{base}/scenario/{name}") if name else _call("GET", f"{base}/scenario")
    console.print(f"scenario: {body['scenario']}")


@market_app.command("settlement")
def settlement(data_dir: DataDir = DEFAULT_DATA) -> None:
    """Revenue per accepted bid and activation, and the totals."""
    body = _call("GET", service_url(data_dir, "market_sim") + "/settlement")
    console.print(
        f"capacity {body['capacity_revenue_eur']:.2f} EUR, "
        f"activations {body['activation_revenue_eur']:.2f} EUR, "
        f"total {body['total_eur']:.2f} EUR over {len(body['lines'])} lines"
    )
