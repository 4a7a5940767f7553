"""The service runtime on the real broker and Redis: a background job that dies turns health red."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from hybridpool_shared.runtime import Service, build_service
from hybridpool_shared.settings import ServiceSettings
from tests.infra import Infra

pytestmark = pytest.mark.integration


async def test_a_background_job_that_dies_is_logged_and_makes_health_degraded(
    infra: Infra, caplog: pytest.LogCaptureFixture
) -> None:
    service = build_service(
        "runtime-test", ServiceSettings(kafka_bootstrap=infra.kafka_bootstrap, redis_url=infra.redis_url)
    )
    root = logging.getLogger()
    root.addHandler(caplog.handler)  # building a service replaced the root's handlers
    go = asyncio.Event()

    async def follow_forever() -> None:
        await asyncio.Event().wait()

    async def replay_once() -> None:
        await go.wait()

    async def consume_forever() -> None:
        await go.wait()
        raise ConnectionError("broker went away")

    service.background += [follow_forever, replay_once, consume_forever]
    try:
        degraded = await _health_after_jobs_ended(service, go)
    finally:
        root.removeHandler(caplog.handler)
    assert degraded.status_code == 503
    assert degraded.json()["failed_jobs"] == {"consume_forever": "ConnectionError('broker went away')"}
    assert "background job consume_forever died" in caplog.text


async def _health_after_jobs_ended(service: Service, go: asyncio.Event) -> httpx.Response:
    """Run the service, check it healthy, let all but its first job end, and return its health then."""
    async with service.api.router.lifespan_context(service.api):
        transport = httpx.ASGITransport(app=service.api)
        async with httpx.AsyncClient(transport=transport, base_url="http://runtime-test") as client:
            healthy = await client.get("/health")
            assert (healthy.status_code, healthy.json()["failed_jobs"]) == (200, {})
            go.set()
            await asyncio.wait(service.jobs[1:])
            return await client.get("/health")
