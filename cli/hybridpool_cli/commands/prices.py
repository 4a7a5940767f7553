"""`hybridpool prices …`: backfill any date range of any price dataset, with a progress bar."""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console()
prices_app = typer.Typer(help="Price ingestion: backfill from Energi Data Service or replay files.")


def register(app: typer.Typer) -> None:
    """Add the `prices` command group."""
    app.add_typer(prices_app, name="prices")


@prices_app.command()
def backfill(
    first: Annotated[str, typer.Option("--from", help="First Copenhagen date, YYYY-MM-DD.")],
    last: Annotated[str, typer.Option("--to", help="Last Copenhagen date (inclusive), YYYY-MM-DD.")],
    dataset: Annotated[
        str, typer.Option(help="EDS dataset name, or day_ahead / imbalance / reserve / all.")
    ] = "all",
    source: Annotated[str, typer.Option(help="api or replay (default: PRICE_INGEST_SOURCE).")] = "",
    replay_dir: Annotated[
        Path | None, typer.Option(help="Replay files (default: the bundled sample).")
    ] = None,
    expand_hourly: Annotated[bool, typer.Option(help="Repeat hourly history over its quarters.")] = False,
) -> None:
    """Ingest every price of a date range; re-running it publishes nothing new (idempotent)."""
    from services.price_ingest.backfill import run_windows, standalone, windows
    from services.price_ingest.settings import PriceIngestSettings

    try:
        start, end = date.fromisoformat(first), date.fromisoformat(last)
    except ValueError as exc:
        raise typer.BadParameter(f"dates must be YYYY-MM-DD: {exc}") from exc
    if end < start:
        raise typer.BadParameter("--to is before --from")
    overrides: dict[str, object] = {"expand_hourly": expand_hourly or None, "source": source or None}
    if replay_dir:
        overrides["replay_dir"] = replay_dir
    try:
        settings = PriceIngestSettings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
        plan = windows(dataset, start, end, settings.backfill_window_days)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError too
        raise typer.BadParameter(str(exc)) from exc

    async def run() -> None:
        with Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console,
        ) as bar:  # fmt: skip
            task = bar.add_task(f"backfill {dataset} {start}..{end}", total=len(plan))
            async with standalone(settings) as (ingestor, src):
                totals = await run_windows(
                    ingestor,
                    src,
                    plan,
                    lambda w, r: bar.update(task, advance=1, description=w[0].name),
                    prefetch=settings.api_max_concurrency,
                )
        console.print(
            f"[green]backfill done[/]: fetched {totals.fetched}, published {totals.published} "
            f"(corrections {totals.corrected}), unchanged {totals.unchanged}, dead-lettered {totals.rejected}"
        )

    asyncio.run(run())
