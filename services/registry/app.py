"""Wiring of the registry service: settings, connections, HTTP routes, audit publication."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from hybridpool_shared import topics
from hybridpool_shared.messages.registry import AuditRecorded, SiteMasterDataChanged
from hybridpool_shared.runtime import Service, build_service, serve
from hybridpool_shared.timeutil import utc_now
from services.registry.adapters import RegistryStore
from services.registry.api import Registry, mount
from services.registry.principals import hashed, load_specs
from services.registry.settings import RegistrySettings

LOGGER = logging.getLogger(__name__)
DESCRIPTION = """Site master data (HP-Hub 101–109), settings (201–204) and status (301–305).

**Authentication**: `POST /token` with OAuth2 client credentials (systems) or a password grant
(people), then `Authorization: Bearer <token>`. Principals come from `REGISTRY_PRINCIPALS_JSON` or
`REGISTRY_PRINCIPALS_FILE`; in local development a file with one random-secret principal per role
is generated at first start as `<data dir>/registry/principals.json` (never committed).

**Roles**: installer (own sites' master data, bulk import/export), operator (master data and
operational data of sites whose owner consented, per purpose: pass `?purpose=`), auditor (audit
log), user (the owner: own data, consents with expiry). Every write, every operational read and
every denial is appended to a hash-chained audit log, published on `audit.log`.
"""
AUDIT_PAGE = 500
AUDIT_IDLE_S = 1.0
OUTBOX_INTERVAL_S = 5.0
OUTBOX_GRACE_S = 10.0  # requests publish their own events; the pump only picks up leftovers
OUTBOX_PAGE = 5000


def build(settings: RegistrySettings) -> Service:
    """Create the service with its routes (not yet connected)."""
    service = build_service(
        "registry",
        settings,
        consumes=(),
        produces=(topics.SITES_REGISTRY, topics.AUDIT_LOG),
        title="hybridpool registry: sites, consent and audit (HP-Hub model)",
    )
    service.api.description = DESCRIPTION
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

    async def check_durability() -> None:
        try:
            config = await service.redis.config_get("appendonly")
        except Exception:  # managed Redis may refuse CONFIG; durability is then the operator's call
            return
        values = {str(k, "utf-8") if isinstance(k, bytes) else str(k): v for k, v in dict(config).items()}
        if values.get("appendonly") in (b"no", "no"):
            LOGGER.warning("Redis runs without AOF: registry state (consents, audit chain) may be lost")

    async def publish_outbox() -> None:
        await outbox_pump(registry)

    service.on_start.append(bootstrap_principals)
    service.on_start.append(check_durability)
    service.background.append(publish_audit)
    service.background.append(publish_outbox)
    return service


async def audit_pump(service: Service, registry: Registry) -> None:
    """Publish the audit chain on audit.log in sequence order, from a cursor kept in Redis."""
    while True:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation that arrives as
        # the event is set (an audit just before shutdown), and the pump then never stops.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(AUDIT_IDLE_S):
                await registry.audit_added.wait()
        registry.audit_added.clear()
        try:
            await flush_audit(service, registry)
        except Exception:
            LOGGER.exception("publishing the audit log failed; retrying")


async def outbox_pump(registry: Registry) -> None:
    """Publish site events left in the outbox (a crash between Redis write and broker ack)."""
    while True:
        await asyncio.sleep(OUTBOX_INTERVAL_S)
        try:
            await flush_outbox(registry)
        except Exception:
            LOGGER.exception("publishing the site outbox failed; retrying")


async def flush_outbox(registry: Registry) -> int:
    """Publish site events older than the grace period that are still in the outbox."""
    cutoff = utc_now() - timedelta(seconds=OUTBOX_GRACE_S)
    stale = [e for e in await registry.store.outbox(OUTBOX_PAGE) if e.changed_at < cutoff]
    if stale:
        await registry.publish_all(stale)
        LOGGER.warning("republished %s site events from the outbox", len(stale))
    return len(stale)


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
