"""Start every service as its own process, wait for health, and stop them all cleanly."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from hybridpool_cli.infra import Infrastructure, ManagedProcess, free_port, spawn
from hybridpool_shared.settings import INFRA_FILE_ENV

SERVICES: tuple[str, ...] = (
    "registry",
    "price_ingest",
    "telemetry",
    "balance",
    "bidding",
    "market_sim",
    "dispatch",
    "site_sim",
    "opsroom",
)
HEALTH_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class RunningService:
    """Where a started service listens."""

    name: str
    pid: int
    port: int
    log: str

    @property
    def url(self) -> str:
        """Return the service's base URL."""
        return f"http://127.0.0.1:{self.port}"


def service_env(
    name: str, infra: Infrastructure, port: int, infra_file: Path, extra: Mapping[str, str]
) -> dict[str, str]:
    """Return the environment a service process starts with."""
    env = dict(os.environ)
    env.update(extra)
    env["KAFKA_BOOTSTRAP"] = infra.kafka_bootstrap
    env["REDIS_URL"] = infra.redis_url
    env[f"{name.upper()}_HTTP_PORT"] = str(port)
    env[INFRA_FILE_ENV] = str(infra_file)
    return env


def start_services(
    names: Sequence[str],
    infra: Infrastructure,
    data_dir: Path,
    extra_env: Mapping[str, str],
    ports: Mapping[str, int] | None = None,
) -> tuple[list[ManagedProcess], list[RunningService]]:
    """Spawn each service with `python -m services.<name>`."""
    procs: list[ManagedProcess] = []
    running: list[RunningService] = []
    infra_file = data_dir / "infra.json"
    for name in names:
        port = (ports or {}).get(name) or free_port()
        log = data_dir / "logs" / f"{name}.log"
        env = service_env(name, infra, port, infra_file, extra_env)
        proc = spawn(name, [sys.executable, "-m", f"services.{name}"], log, env)
        procs.append(proc)
        running.append(RunningService(name, proc.proc.pid, port, str(log)))
    return procs, running


def wait_healthy(
    running: Sequence[RunningService], procs: Sequence[ManagedProcess], timeout: float
) -> dict[str, float]:
    """Wait until every service's /health answers 200; return seconds each took."""
    started = time.monotonic()
    pending = {svc.name: svc for svc in running}
    by_name = {p.name: p for p in procs}
    ready: dict[str, float] = {}
    with httpx.Client(timeout=2.0) as client:
        while pending and time.monotonic() - started < timeout:
            for name, svc in list(pending.items()):
                if by_name[name].proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {by_name[name].proc.returncode}; see {svc.log}")
                if _healthy(client, svc):
                    ready[name] = time.monotonic() - started
                    del pending[name]
            time.sleep(0.2)
    if pending:
        raise RuntimeError(f"not healthy after {timeout:.0f} s: {', '.join(sorted(pending))}")
    return ready


def _healthy(client: httpx.Client, svc: RunningService) -> bool:
    try:
        return client.get(f"{svc.url}/health").status_code == 200
    except httpx.HTTPError:
        return False


def write_state(data_dir: Path, infra: Infrastructure, running: Sequence[RunningService]) -> None:
    """Record where infrastructure and services run, for `hybridpool status` and tools."""
    state = {
        "kafka_bootstrap": infra.kafka_bootstrap,
        "redis_url": infra.redis_url,
        "services": [asdict(svc) for svc in running],
        "pid": os.getpid(),
    }
    (data_dir / "infra.json").write_text(json.dumps(state, indent=2))


def read_state(data_dir: Path) -> dict[str, object] | None:
    """Return the recorded state of a running platform, or None."""
    path = data_dir / "infra.json"
    if not path.is_file():
        return None
    state: dict[str, object] = json.loads(path.read_text())
    return state


def stop_all(procs: Sequence[ManagedProcess]) -> None:
    """Send SIGTERM to every service at once, then wait for each (SIGKILL on timeout)."""
    import signal

    for proc in procs:
        if proc.proc.poll() is None:
            proc.proc.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.stop(timeout=15.0)
