"""Wiring of the registry service: settings, connections, HTTP routes, audit publication."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from hybridpool_shared import topics
from hybridpool_shared.messages.registry import AuditRecorded, SiteMasterDataChanged
from hybridpool_shared.runtime import Service, build_service, serve
from services.registry.adapters import RegistryStore
from services.registry.api import Registry, mount
from services.registry.principals import hashed, load_specs
from services.registry.settings import RegistrySettings

LOGGER = logging.getLogger(__name__)
AUDIT_PAGE = 500
AUDIT_IDLE_S = 1.0


def build(settings: RegistrySettings) -> Service:
    """Create the service with its routes (not yet connected)."""
    service = build_service(
        "registry",
        settings,
        consumes=(),
        produces=(topics.SITES_REGISTRY, topics.AUDIT_LOG),
        title="hybridpool registry: sites, consent and audit (HP-Hub model)",
    )
    store = RegistryStore(service.redis, settings.key_prefix)

    async def publish_site(event: SiteMasterDataChanged) -> None:
        await service.publish(topics.SITES_REGISTRY, event)

    registry = Registry(store, publish_site, settings.token_ttl_s, settings.publish_concurrency)
    mount(service.api, registry, settings.import_max_rows)

    async def bootstrap_principals() -> None:
        specs = await asyncio.to_thread(load_specs, settings)
        await store.put_principals(await asyncio.to_thread(hashed, specs))
        LOGGER.info("loaded %s principals", len(specs))

    async def publish_audit() -> None:
        await audit_pump(service, registry)

    service.on_start.append(bootstrap_principals)
    service.background.append(publish_audit)
    return service


async def audit_pump(service: Service, registry: Registry) -> None:
    """Publish the audit chain on audit.log in sequence order, from a cursor kept in Redis."""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(registry.audit_added.wait(), AUDIT_IDLE_S)
        registry.audit_added.clear()
        try:
            await flush_audit(service, registry)
        except Exception:
            LOGGER.exception("publishing the audit log failed; retrying")


async def flush_audit(service: Service, registry: Registry) -> int:
    """Publish every audit record after the cursor; return how many were published."""
    store = registry.store
    cursor = await store.published_cursor()
    sent = 0
    while raws := await store.audit_range(cursor, cursor + AUDIT_PAGE - 1):
        for raw in raws:
            await service.publish(topics.AUDIT_LOG, AuditRecorded.from_json_bytes(raw))
        cursor += len(raws)
        sent += len(raws)
        await store.set_published_cursor(cursor)
    return sent


def main() -> None:
    """Run the service until stopped."""
    serve(build(RegistrySettings()))
