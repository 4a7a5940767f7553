"""`hybridpool test-activation`: a prequalification-style test on the live pool, with its report."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from hybridpool_cli.supervisor import read_state

console = Console()
PRODUCTS = ("fcr-n", "fcr-d-up", "fcr-d-down", "mfrr")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h)?\s*$")


def parse_duration(text: str) -> float:
    """Return seconds from '900', '90s', '15m' or '1h'."""
    match = _DURATION.match(text)
    if match is None:
        raise typer.BadParameter(f"duration {text!r}: use seconds or a number with s, m or h")
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value * {"s": 1, "m": 60, "min": 60, "h": 3600}[unit]


def dispatch_url(data_dir: Path) -> str:
    """Return the dispatch service's URL from the running platform's state file."""
    state = read_state(data_dir)
    if state is None:
        raise typer.BadParameter(f"no running platform in {data_dir} (start it with `hybridpool up`)")
    services = state.get("services")
    for svc in services if isinstance(services, list) else []:
        if isinstance(svc, dict) and svc.get("name") == "dispatch":
            return f"http://127.0.0.1:{svc['port']}"
    raise typer.BadParameter(f"the platform in {data_dir} runs no dispatch service")


def _seconds(value: Any) -> str:
    return "—" if value is None else f"{value:.0f} s"


def print_report(report: dict[str, Any]) -> None:
    """Print an activation report: verdict, energy, times, checkpoints, units, reasons."""
    colour = "green" if report["compliant"] else "red"
    console.print(
        f"[bold]{report['activation_id']}[/] {report['product']} {report['direction']} "
        f"{report['requested_kw'] / 1000:.1f} MW: [bold {colour}]{report['verdict'].upper()}[/]"
    )
    summary = Table(show_header=False)
    summary.add_row("requested energy", f"{report['requested_energy_kwh']:.1f} kWh")
    summary.add_row(
        "delivered energy", f"{report['delivered_energy_kwh']:.1f} kWh ({report['delivered_share']:.0%})"
    )
    summary.add_row("time to 50 %", _seconds(report["time_to_50_s"]))
    summary.add_row("time to 100 %", _seconds(report["time_to_100_s"]))
    summary.add_row(
        "units",
        f"{report['units_dispatched']} dispatched, {report['units_replaced']} replacements, "
        f"{report['units_unresponsive']} unresponsive",
    )
    console.print(summary)
    checks = Table("requirement", "reached after", "met")
    for c in report["checkpoints"]:
        checks.add_row(
            f"{c['share']:.0%} within {c['within_s']:.0f} s ({c['rule']})",
            _seconds(c["reached_after_s"]),
            "[green]yes[/]" if c["met"] else "[red]no[/]",
        )
    console.print(checks)
    for reason in report["reasons"]:
        console.print(f"[red]•[/] {reason}")


def run_test_activation(
    product: Annotated[str, typer.Option(help=f"One of {', '.join(PRODUCTS)}.")],
    mw: Annotated[float, typer.Option(help="Requested power step in MW.")],
    duration: Annotated[str, typer.Option(help="How long: seconds, or 90s / 15m / 1h.")] = "15m",
    direction: Annotated[str, typer.Option(help="up (HPs off) or down (HPs on).")] = "up",
    data_dir: Annotated[Path, typer.Option(help="Where `hybridpool up` keeps its state.")] = Path(".data"),
    url: Annotated[str, typer.Option(help="Dispatch URL (default: from the running platform).")] = "",
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the report (default: duration + 5 min).")
    ] = 0,
    csv: Annotated[Path | None, typer.Option(help="Also write the response curve to this CSV file.")] = None,
) -> None:
    """Run a prequalification-style test activation on the live pool and print its report."""
    if product not in PRODUCTS:
        raise typer.BadParameter(f"product must be one of {', '.join(PRODUCTS)}")
    if direction not in ("up", "down"):
        raise typer.BadParameter("direction must be up or down")
    seconds = parse_duration(duration)
    base = url or dispatch_url(data_dir)
    with httpx.Client(base_url=base, timeout=30) as client:
        body = {"product": product, "direction": direction, "mw": mw, "duration_s": seconds}
        started = client.post("/activations/test", json=body)
        if started.status_code != 202:
            console.print(f"[red]dispatch refused the test: {started.status_code} {started.text}[/]")
            raise typer.Exit(2)
        activation_id = started.json()["activation_id"]
        console.print(
            f"test activation {activation_id} started: {product} {direction} {mw} MW for {seconds:.0f} s"
        )
        report = _wait_for_report(client, activation_id, timeout or seconds + 300)
        if csv is not None:
            csv.write_text(client.get(f"/activations/{activation_id}/report", params={"format": "csv"}).text)
    print_report(report)
    raise typer.Exit(0 if report["compliant"] else 1)


def _wait_for_report(client: httpx.Client, activation_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get(f"/activations/{activation_id}/report")
        if response.status_code == 200 and (report := response.json())["finished"]:
            return dict(report)
        time.sleep(1.0)
    console.print(f"[red]no final report for {activation_id} within {timeout:.0f} s[/]")
    raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    """Add the dispatch commands to the CLI."""
    app.command("test-activation")(run_test_activation)
