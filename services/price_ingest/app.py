"""Wiring of the price_ingest service: settings, connections, subscriptions."""

from __future__ import annotations

from hybridpool_shared import topics
from hybridpool_shared.runtime import Service, build_service, serve
from services.price_ingest.settings import PriceIngestSettings


def build(settings: PriceIngestSettings) -> Service:
    """Create the service with its subscriptions (not yet connected)."""
    service = build_service(
        "price_ingest",
        settings,
        consumes=(),
        produces=(topics.PRICES_DAY_AHEAD, topics.PRICES_IMBALANCE, topics.PRICES_RESERVE),
    )
    # Produces only; its inputs arrive later over HTTP or files.
    return service


def main() -> None:
    """Run the service until stopped."""
    serve(build(PriceIngestSettings()))
