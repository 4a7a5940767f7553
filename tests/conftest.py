"""Session fixtures: a real Kafka-protocol broker and a real Redis, started by the tests themselves.

With a Docker engine that answers ping, testcontainers runs apache/kafka and redis images;
otherwise the embedded Tansu broker and a local redis-server are started on loopback.
KAFKA_BOOTSTRAP / REDIS_URL point the tests at existing infrastructure instead.
A fixture that cannot start its backend fails the run: it never skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from hybridpool_cli.infra import create_topics, start_kafka, start_redis
from hybridpool_shared.topics import all_topics
from tests.infra import Infra


def _docker_ok() -> bool:
    try:
        import docker

        return bool(docker.from_env(timeout=3).ping())
    except Exception:
        return False


@contextlib.contextmanager
def _kafka(data_dir: Path, *, use_env: bool = True) -> Iterator[str]:
    if use_env and (bootstrap := os.environ.get("KAFKA_BOOTSTRAP")):
        yield bootstrap
    elif _docker_ok():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer() as kafka:
            yield kafka.get_bootstrap_server()
    else:
        proc, bootstrap = start_kafka(data_dir)
        try:
            yield bootstrap
        finally:
            proc.stop()


@contextlib.contextmanager
def _redis(data_dir: Path, *, use_env: bool = True) -> Iterator[str]:
    if use_env and (url := os.environ.get("REDIS_URL")):
        yield url
    elif _docker_ok():
        from testcontainers.redis import RedisContainer

        with RedisContainer() as redis:
            yield f"redis://{redis.get_container_host_ip()}:{redis.get_exposed_port(6379)}/0"
    else:
        proc, url = start_redis(data_dir)
        try:
            yield url
        finally:
            proc.stop()


@contextlib.contextmanager
def _infrastructure(*, use_env: bool) -> Iterator[Infra]:
    with tempfile.TemporaryDirectory(prefix="hybridpool-test-") as tmp:
        data_dir = Path(tmp)
        with (
            _kafka(data_dir, use_env=use_env) as bootstrap,
            _redis(data_dir, use_env=use_env) as redis_url,
        ):
            asyncio.run(create_topics(bootstrap, all_topics()))
            yield Infra(kafka_bootstrap=bootstrap, redis_url=redis_url, data_dir=data_dir)


@pytest.fixture(scope="session")
def shared_infra() -> Iterator[Infra]:
    """The session's broker and Redis, with every catalogue topic created."""
    with _infrastructure(use_env=True) as shared:
        yield shared


@pytest.fixture(scope="module")
def infra(request: pytest.FixtureRequest) -> Infra:
    """The session's broker and Redis, or a module's own when the module is marked private_infra."""
    if request.node.get_closest_marker("private_infra"):
        private: Infra = request.getfixturevalue("private_infra")
        return private
    shared: Infra = request.getfixturevalue("shared_infra")
    return shared


@pytest.fixture
async def redis(infra: Infra) -> AsyncIterator[aioredis.Redis]:
    """A client of the module's real Redis server."""
    client = aioredis.from_url(infra.redis_url)
    yield client
    await client.aclose()


@pytest.fixture(scope="module")
def private_infra() -> Iterator[Infra]:
    """A broker and Redis of a module's own, for tests that write garbage to every topic."""
    with _infrastructure(use_env=False) as private:
        yield private
