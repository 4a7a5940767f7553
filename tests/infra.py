"""Test helpers for the real broker and Redis: read topics, run service processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from hybridpool_cli.infra import ManagedProcess, free_port, spawn
from hybridpool_shared.messages import ControlOption, SiteLocation, SiteMasterDataChanged, TelemetryReported

P = ParamSpec("P")
T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Infra:
    """Addresses of the session's real broker and Redis."""

    kafka_bootstrap: str
    redis_url: str
    data_dir: Path


async def produce(bootstrap: str, topic: str, value: bytes, key: bytes | None = None) -> None:
    """Publish one raw record and wait for the broker's acknowledgement."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


@contextlib.asynccontextmanager
async def reader(bootstrap: str, *topics: str) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer without a group that reads topics from the beginning."""
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


async def wait_for_records(
    bootstrap: str,
    topic: str,
    match: Callable[[ConsumerRecord[bytes, bytes]], bool],
    *,
    count: int = 1,
    timeout: float = 60.0,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read topic from the start until count matching records arrived, or fail on timeout."""
    found: list[ConsumerRecord[bytes, bytes]] = []
    async with reader(bootstrap, topic) as consumer:
        deadline = time.monotonic() + timeout
        while len(found) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{len(found)}/{count} matching records on {topic} in {timeout} s")
            batch = await consumer.getmany(timeout_ms=int(min(left, 1.0) * 1000))
            for records in batch.values():
                found.extend(r for r in records if _matches(match, r))
    return found


def _matches(
    match: Callable[[ConsumerRecord[bytes, bytes]], bool], record: ConsumerRecord[bytes, bytes]
) -> bool:
    """Apply a test's matcher; a record it cannot even read (another test's garbage) is no match."""
    try:
        return match(record)
    except (ValueError, KeyError, TypeError):  # json and pydantic errors are ValueErrors
        return False


def unique(prefix: str) -> str:
    """Return an id no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class ManualClock:
    """A clock the test moves by hand: call it for the time (epoch seconds), set `at` to move it."""

    def __init__(self, at: float) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


@dataclass
class RunningService:
    """A service process started by a test."""

    name: str
    process: ManagedProcess
    url: str


def start_service(
    name: str, infra: Infra, env: Mapping[str, str] | None = None, timeout: float = 60.0
) -> RunningService:
    """Start `python -m services.<name>` against the test infrastructure and wait for /health."""
    port = free_port()
    full_env = dict(os.environ)
    full_env.update(
        {
            "KAFKA_BOOTSTRAP": infra.kafka_bootstrap,
            "REDIS_URL": infra.redis_url,
            f"{name.upper()}_HTTP_PORT": str(port),
            **(env or {}),
        }
    )
    log = infra.data_dir / "logs" / f"{name}-{port}.log"
    proc = spawn(name, [sys.executable, "-m", f"services.{name}"], log, full_env)
    url = f"http://127.0.0.1:{port}"
    _wait_healthy(proc, url, timeout)
    return RunningService(name, proc, url)


def _wait_healthy(proc: ManagedProcess, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc.proc.poll() is not None:
                raise RuntimeError(f"{proc.name} exited: {proc.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if client.get(f"{url}/health").status_code == 200:
                    return
            time.sleep(0.2)
    proc.stop()
    raise TimeoutError(f"{proc.name} not healthy in {timeout} s: {proc.log.read_text()[-3000:]}")


@contextlib.contextmanager
def running(name: str, infra: Infra, env: Mapping[str, str] | None = None) -> Iterator[RunningService]:
    """Run a service for the duration of a with-block; a failure inside it carries the service's log."""
    svc = start_service(name, infra, env)
    try:
        yield svc
    except BaseException as exc:
        exc.add_note(f"{name} log:\n" + svc.process.log.read_text()[-4000:])
        raise
    finally:
        svc.process.stop()


async def poll_json(
    client: httpx.AsyncClient, url: str, ok: Callable[[Any], bool], timeout: float = 60.0
) -> Any:
    """GET url until it answers 200 with a JSON body that satisfies ok; fail with the last answer."""
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get(url)
        if response.status_code == 200 and ok(body := response.json()):
            return body
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{url} did not reach the condition in {timeout} s: "
                f"{response.status_code} {response.text[:300]}"
            )
        await asyncio.sleep(0.3)


def villa_reading(site_id: str, measured_at: datetime, meter_kwh: float) -> TelemetryReported:
    """A running villa's reading (2 kW electric, 6 kW heat), as its gateway would report it."""
    return TelemetryReported(
        site_id=site_id,
        measured_at=measured_at,
        electric_power_kw=2.0,
        meter_reading_kwh=meter_kwh,
        heat_power_kw=6.0,
        supply_temp_c=40.0,
        return_temp_c=35.0,
        indoor_temp_c=21.0,
        outdoor_temp_c=2.0,
        hp_running=True,
        boiler_running=False,
        sg_ready_state=2,
    )


def registered_villa(
    site_id: str, min_run_minutes: int = 15, lockout_minutes: int = 15
) -> SiteMasterDataChanged:
    """A villa's registry entry (DK2, 3 kW electric, SG Ready) with the given protection times."""
    return SiteMasterDataChanged(
        site_id=site_id,
        changed_at=datetime.now(UTC),
        location=SiteLocation(latitude_deg=55.7, longitude_deg=12.5, price_area="DK2"),
        hp_heat_power_kw=9.0,
        hp_electric_power_kw=3.0,
        boiler_power_kw=30.0,
        min_run_minutes=min_run_minutes,
        lockout_minutes=lockout_minutes,
        control_options=(ControlOption.SG_READY,),
    )


def fail_once(call: Callable[P, Awaitable[T]], error: Exception) -> Callable[P, Coroutine[Any, Any, T]]:
    """Return call, but raising error the first time: an outage the code under test must survive."""
    failed = False

    async def flaky(*args: P.args, **kwargs: P.kwargs) -> T:
        nonlocal failed
        if not failed:
            failed = True
            raise error
        return await call(*args, **kwargs)

    return flaky
