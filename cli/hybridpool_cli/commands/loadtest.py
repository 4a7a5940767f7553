"""`hybridpool loadtest …`: the load tests of loadtests/, each with its own embedded broker and Redis."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Annotated

import typer

loadtest_app = typer.Typer(help="Load tests on embedded infrastructure; they print their figures.")


def register(app: typer.Typer) -> None:
    """Add the `loadtest` command group."""
    app.add_typer(loadtest_app, name="loadtest")


def _telemetry() -> ModuleType:
    """Import loadtests.telemetry, which lives in the source tree rather than the installed wheel."""
    try:
        return importlib.import_module("loadtests.telemetry")
    except ModuleNotFoundError:
        sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
        return importlib.import_module("loadtests.telemetry")


@loadtest_app.command("telemetry-fleet")
def telemetry_fleet(
    sites: Annotated[int, typer.Option(help="Simulated villas.")] = 10_000,
    interval: Annotated[float, typer.Option(help="Seconds between a villa's readings.")] = 10.0,
    seconds: Annotated[float, typer.Option(help="Length of the measurement.")] = 60.0,
    warmup: Annotated[float, typer.Option(help="Seconds to run before measuring.")] = 15.0,
) -> None:
    """Simulated fleet → broker → telemetry → Redis: readings/s, lag p50/p99, CPU and memory."""
    _telemetry().fleet(sites, interval, seconds, warmup)


@loadtest_app.command("telemetry-throughput")
def telemetry_throughput(
    sites: Annotated[int, typer.Option(help="Sites whose readings are pre-loaded.")] = 100_000,
    readings_per_site: Annotated[int, typer.Option(help="Readings per site.")] = 4,
    spacing: Annotated[float, typer.Option(help="Seconds between a site's readings.")] = 400.0,
    batch: Annotated[int, typer.Option(help="Readings per handler call.")] = 4000,
) -> None:
    """Drain pre-loaded readings with one telemetry process and compare with a raw consumer."""
    _telemetry().throughput(sites, readings_per_site, spacing, batch)
