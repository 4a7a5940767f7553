"""The `hybridpool` command line."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.table import Table

from hybridpool_cli import supervisor
from hybridpool_cli.commands import register_all
from hybridpool_cli.infra import ManagedProcess, infrastructure
from hybridpool_shared.topics import all_topics

app = typer.Typer(
    help="HybridPool: pool hybrid heat pumps into Nordic flexibility markets.", no_args_is_help=True
)
console = Console()

DataDir = Annotated[Path, typer.Option(help="Where Redis AOF, logs and run state are kept.")]
DEFAULT_DATA = Path(".data")


@app.command()
def up(
    data_dir: DataDir = DEFAULT_DATA,
    sites: Annotated[int, typer.Option(help="Simulated villas.")] = 2200,
    only: Annotated[str, typer.Option(help="Comma-separated services to run (default: all).")] = "",
    opsroom_port: Annotated[int, typer.Option(help="Port of the ops room web page.")] = 8080,
    exit_when_healthy: Annotated[bool, typer.Option(help="Stop once healthy (smoke test).")] = False,
) -> None:
    """Start broker, Redis and every service; Ctrl-C stops everything."""
    names = [n for n in only.split(",") if n] or list(supervisor.SERVICES)
    unknown = set(names) - set(supervisor.SERVICES)
    if unknown:
        raise typer.BadParameter(f"unknown services: {', '.join(sorted(unknown))}")
    data_dir.mkdir(parents=True, exist_ok=True)
    stop = _stop_event()
    started = time.monotonic()
    kafka, redis = os.environ.get("KAFKA_BOOTSTRAP"), os.environ.get("REDIS_URL")
    with infrastructure(data_dir, all_topics(), kafka=kafka, redis=redis) as infra:
        extra = {"SITE_SIM_SITES": str(sites)}
        ports = {"opsroom": opsroom_port}
        procs, running = supervisor.start_services(names, infra, data_dir, extra, ports)
        try:
            supervisor.write_state(data_dir, infra, running)
            ready = supervisor.wait_healthy(running, procs, supervisor.HEALTH_TIMEOUT_S)
            _print_table(infra.kafka_bootstrap, infra.redis_url, running, ready)
            console.print(
                f"[green]all {len(running)} services healthy in "
                f"{time.monotonic() - started:.1f} s[/] — Ctrl-C stops everything"
            )
            if not exit_when_healthy:
                _wait(stop, procs)
        finally:
            console.print("stopping services …")
            supervisor.stop_all(procs)
            (data_dir / "infra.json").unlink(missing_ok=True)
    console.print("[green]stopped; Redis data flushed to its AOF[/]")


def _stop_event() -> threading.Event:
    stop = threading.Event()

    def _handler(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)
    return stop


def _wait(stop: threading.Event, procs: list[ManagedProcess]) -> None:
    while not stop.wait(0.5):
        dead = [p.name for p in procs if p.proc.poll() is not None]
        if dead:
            console.print(f"[red]service exited: {', '.join(dead)}[/] — stopping the platform")
            raise typer.Exit(1)


def _print_table(
    kafka: str, redis: str, running: list[supervisor.RunningService], ready: dict[str, float]
) -> None:
    table = Table(title="HybridPool")
    for col in ("component", "where", "pid", "healthy after"):
        table.add_column(col)
    table.add_row("kafka broker", kafka, "", "")
    table.add_row("redis", redis, "", "")
    for svc in running:
        table.add_row(svc.name, svc.url, str(svc.pid), f"{ready.get(svc.name, 0):.1f} s")
    console.print(table)


@app.command()
def status(data_dir: DataDir = DEFAULT_DATA) -> None:
    """Show the health of a running platform."""
    state = supervisor.read_state(data_dir)
    if state is None:
        console.print("[yellow]no platform is running here (no run state found)[/]")
        raise typer.Exit(1)
    table = Table(title="HybridPool status")
    for col in ("service", "url", "health"):
        table.add_column(col)
    healthy = True
    services = state.get("services", [])
    assert isinstance(services, list)
    with httpx.Client(timeout=3.0) as client:
        for svc in services:
            url = f"http://127.0.0.1:{svc['port']}"
            try:
                body = client.get(f"{url}/health").json()
                verdict = body.get("status", "?")
            except (httpx.HTTPError, ValueError):
                verdict = "unreachable"
            healthy &= verdict == "ok"
            table.add_row(svc["name"], url, verdict)
    console.print(f"kafka {state['kafka_bootstrap']}  redis {state['redis_url']}")
    console.print(table)
    raise typer.Exit(0 if healthy else 1)


@app.command()
def topics(
    bootstrap: Annotated[str, typer.Option(envvar="KAFKA_BOOTSTRAP")],
) -> None:
    """Create every catalogue topic (and its dead-letter topic) on a broker."""
    from hybridpool_cli.infra import create_topics

    asyncio.run(create_topics(bootstrap, all_topics()))
    console.print(f"{len(all_topics())} topics present on {bootstrap}")


register_all(app)

if __name__ == "__main__":
    app()
