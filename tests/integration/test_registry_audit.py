"""The audit chain on a real Redis: concurrent writers never fork or break the hash chain."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from hybridpool_shared.timeutil import utc_now
from services.registry.adapters import RegistryStore
from services.registry.domain import AuditEntry, verify_chain
from tests.infra import Infra, unique

pytestmark = pytest.mark.integration


async def test_concurrent_appends_from_two_replicas_keep_one_valid_chain(infra: Infra) -> None:
    prefix = unique("audit-test")
    clients = [aioredis.from_url(infra.redis_url) for _ in range(2)]
    stores = [RegistryStore(client, prefix) for client in clients]
    try:

        async def write(store: RegistryStore, writer: int) -> None:
            for i in range(40):
                entries = [
                    AuditEntry(f"writer-{writer}", "operator", "operational.read", "allowed", f"s-{i}")
                ]
                await store.append_audit(entries * (1 + i % 3), utc_now())

        await asyncio.gather(write(stores[0], 0), write(stores[1], 1))
        raws = await stores[0].audit_range(0, -1)
        report = verify_chain(raws)
        assert report.ok, report
        assert len(raws) == 2 * sum(1 + i % 3 for i in range(40))
        assert await stores[1].audit_length() == len(raws)
    finally:
        for client in clients:
            await client.aclose()
