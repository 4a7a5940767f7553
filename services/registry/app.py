"""Wiring of the registry service: settings, connections, subscriptions."""

from __future__ import annotations

from hybridpool_shared import topics
from hybridpool_shared.runtime import Service, build_service, serve
from services.registry.settings import RegistrySettings


def build(settings: RegistrySettings) -> Service:
    """Create the service with its subscriptions (not yet connected)."""
    service = build_service(
        "registry",
        settings,
        consumes=(),
        produces=(topics.SITES_REGISTRY, topics.AUDIT_LOG),
    )
    # Produces only; its inputs arrive later over HTTP or files.
    return service


def main() -> None:
    """Run the service until stopped."""
    serve(build(RegistrySettings()))
