"""The service runtime on the real broker and Redis: a background job that dies turns health red."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest

from hybridpool_shared.runtime import Service, build_service
from hybridpool_shared.settings import ServiceSettings
from services.registry.app import build as build_registry
from services.registry.settings import RegistrySettings
from tests.infra import Infra, unique

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


async def test_a_registry_stops_right_after_an_audited_login(infra: Infra) -> None:
    """Seen with the registry: the cancellation of its audit publisher was lost when it landed while the
    publisher worked, and the shutdown waited for ever. Stopped jobs are cancelled until they end."""
    secret = "a-long-enough-secret-0001"
    principal = {"id": "aud-stop", "role": "auditor", "secret": secret}
    settings = RegistrySettings(
        kafka_bootstrap=infra.kafka_bootstrap,
        redis_url=infra.redis_url,
        key_prefix=unique("runtime-stop"),
        principals_json=json.dumps([principal]),
    )
    service = build_registry(settings)
    lifespan = service.api.router.lifespan_context(service.api)
    await lifespan.__aenter__()
    transport = httpx.ASGITransport(app=service.api)
    async with httpx.AsyncClient(transport=transport, base_url="http://registry") as client:
        login = {"grant_type": "password", "username": "aud-stop", "password": secret}
        assert (await client.post("/token", data=login)).status_code == 200  # audited: the publisher wakes
    stopping = asyncio.create_task(lifespan.__aexit__(None, None, None))  # as a fixture's teardown does
    async with asyncio.timeout(30):
        await stopping
    assert all(job.done() for job in service.jobs)
