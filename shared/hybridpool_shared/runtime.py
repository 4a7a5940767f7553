"""The frame every service runs in: Kafka, Redis, /health, /metrics, /asyncapi.json, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from faststream.kafka import KafkaBroker
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hybridpool_shared.asyncapi import build_asyncapi
from hybridpool_shared.logging import configure_logging
from hybridpool_shared.messages import Message
from hybridpool_shared.messaging import Consumer, publish
from hybridpool_shared.metrics import ServiceMetrics
from hybridpool_shared.settings import ServiceSettings
from hybridpool_shared.topics import TopicSpec

LOGGER = logging.getLogger(__name__)
STOP_ROUNDS = 5  # cancellations sent to a background job that keeps running at shutdown
STOP_ROUND_S = 2.0
VERSION = "0.1.0"
BackgroundTask = Callable[[], Coroutine[Any, Any, None]]


@dataclass
class Service:
    """A running service's connections and metadata, built once and passed to its handlers."""

    name: str
    settings: ServiceSettings
    consumes: tuple[TopicSpec, ...]
    produces: tuple[TopicSpec, ...]
    metrics: ServiceMetrics
    broker: KafkaBroker
    redis: aioredis.Redis
    consumer: Consumer
    api: FastAPI = field(default_factory=FastAPI)
    background: list[BackgroundTask] = field(default_factory=list)
    on_start: list[BackgroundTask] = field(default_factory=list)
    jobs: list[asyncio.Task[None]] = field(default_factory=list)  # the running background jobs
    failed_jobs: dict[str, str] = field(default_factory=dict)  # background jobs that died, and why

    async def publish(self, spec: TopicSpec, message: Message) -> None:
        """Publish a message on one of this service's output topics."""
        if spec not in self.produces:
            raise ValueError(f"{self.name} does not declare {spec.name} as an output")
        await publish(self.broker, spec, message)

    async def health(self) -> dict[str, Any]:
        """Return a health report: broker and Redis reachable, no background job died."""
        kafka_ok = await self.broker.ping(timeout=2.0)
        try:
            redis_ok = bool(await asyncio.wait_for(self.redis.ping(), timeout=2.0))
        except Exception:
            redis_ok = False
        status = "ok" if kafka_ok and redis_ok and not self.failed_jobs else "degraded"
        return {
            "service": self.name,
            "status": status,
            "kafka": kafka_ok,
            "redis": redis_ok,
            "failed_jobs": dict(self.failed_jobs),
        }

    def watch(self, task: asyncio.Task[None]) -> None:
        """Record and log a background job that died: its work has stopped, so health says so."""
        if task.cancelled() or task.exception() is None:
            return  # cancelled at shutdown, or a job that had a finite task and finished it
        exc = task.exception()
        self.failed_jobs[task.get_name()] = repr(exc)
        LOGGER.error("%s: background job %s died", self.name, task.get_name(), exc_info=exc)


def build_service(
    name: str,
    settings: ServiceSettings,
    *,
    consumes: tuple[TopicSpec, ...] = (),
    produces: tuple[TopicSpec, ...] = (),
    title: str = "",
) -> Service:
    """Create a service's broker, Redis client, metrics and HTTP app (not yet connected)."""
    configure_logging(name, settings.log_level)
    metrics = ServiceMetrics(name)
    broker = _make_broker(name, settings, metrics)
    redis = aioredis.from_url(settings.resolved_redis_url(), decode_responses=False)
    service = Service(
        name=name,
        settings=settings,
        consumes=consumes,
        produces=produces,
        metrics=metrics,
        broker=broker,
        redis=redis,
        consumer=Consumer(broker, metrics, group_id=f"hybridpool.{name}"),
    )
    service.api = FastAPI(title=title or f"hybridpool {name}", version=VERSION, lifespan=_lifespan(service))
    _add_operational_routes(service)
    return service


def _make_broker(name: str, settings: ServiceSettings, metrics: ServiceMetrics) -> KafkaBroker:
    return KafkaBroker(
        settings.resolved_kafka_bootstrap(),
        client_id=f"hybridpool-{name}",
        acks="all",
        enable_idempotence=settings.kafka_idempotence,
        graceful_timeout=10.0,
        log_level=logging.DEBUG,  # per-message "Received/Processed" lines only when debugging
        middlewares=(KafkaPrometheusMiddleware(registry=metrics.registry, app_name=name),),
        description=f"hybridpool {name}",
    )


def _add_operational_routes(service: Service) -> None:
    api = service.api

    @api.get("/health", tags=["operations"])
    async def health() -> JSONResponse:
        report = await service.health()
        return JSONResponse(report, status_code=200 if report["status"] == "ok" else 503)

    @api.get("/metrics", tags=["operations"])
    async def metrics() -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @api.get("/asyncapi.json", tags=["operations"])
    async def asyncapi() -> dict[str, Any]:
        return build_asyncapi(service.name, VERSION, service.consumes, service.produces)


def _lifespan(
    service: Service,
) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await _start_broker(service.broker)
        for hook in service.on_start:
            await hook()
        tasks = service.jobs = [asyncio.create_task(job(), name=job.__name__) for job in service.background]
        for task in tasks:
            task.add_done_callback(service.watch)
        LOGGER.info("%s started", service.name)
        try:
            yield
        finally:
            await _stop_jobs(service.name, tasks)
            await service.broker.stop()
            await service.redis.aclose()
            LOGGER.info("%s stopped", service.name)

    return lifespan


async def _stop_jobs(name: str, tasks: list[asyncio.Task[None]]) -> None:
    """Cancel the background jobs and wait for them, cancelling again those still running.

    A cancellation can be lost inside a client call (seen with the registry's audit publisher: its
    Redis and broker calls returned normally with the cancellation pending), and the job's loop then
    runs on; without a second cancellation the service would never stop.
    """
    pending = set(tasks)
    for attempt in range(STOP_ROUNDS):
        if not pending:
            return
        if attempt:
            names = [t.get_name() for t in pending]
            LOGGER.warning("%s: jobs %s ignored a cancellation; cancelling again", name, names)
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=STOP_ROUND_S)
    if pending:
        LOGGER.error("%s: jobs %s did not stop; leaving them", name, [t.get_name() for t in pending])


async def _start_broker(broker: KafkaBroker) -> None:
    """Start the broker with its subscribers joining their groups concurrently.

    KafkaBroker.start() starts subscribers one by one and each group join takes seconds,
    so a service with five subscriptions would need half a minute to become healthy.
    """
    await broker.connect()
    await asyncio.gather(*(sub.start() for sub in broker.subscribers))
    for pub in broker.publishers:
        await pub.start()
    broker.running = True


def serve(service: Service) -> None:
    """Serve the service over HTTP until SIGINT/SIGTERM; port 0 picks a free port and logs it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((service.settings.http_host, service.settings.http_port))
    LOGGER.info("%s listening on http://%s:%s", service.name, *sock.getsockname()[:2])
    config = uvicorn.Config(
        service.api,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))
