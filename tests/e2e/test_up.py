"""`hybridpool up` brings every service to health and Ctrl-C leaves no process behind."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import redis

from hybridpool_cli.infra import redis_binary, start_redis
from hybridpool_cli.supervisor import SERVICES

pytestmark = pytest.mark.e2e


def _wait_for_line(proc: subprocess.Popen[str], needle: str, timeout: float) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"{needle!r} not printed in {timeout} s:\n{''.join(lines)}")


def test_up_runs_everything_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hybridpool_cli.main",
            "up",
            "--data-dir",
            str(data_dir),
            "--sites",
            "50",
            "--opsroom-port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**_clean_env(), "COLUMNS": "200"},
    )
    try:
        # The supervisor itself fails if any service is not healthy within 60 s.
        _wait_for_line(proc, "services healthy in", timeout=120)
        state = json.loads((data_dir / "infra.json").read_text())
        assert sorted(s["name"] for s in state["services"]) == sorted(SERVICES)
        family = psutil.Process(proc.pid).children(recursive=True)
        assert len(family) >= len(SERVICES) + 2  # services, broker, redis
        redis.Redis.from_url(state["redis_url"]).set("hybridpool:test:durable", b"kept")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    assert proc.returncode == 0
    alive = [p.pid for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], f"processes left behind: {alive}"
    assert not (data_dir / "infra.json").exists()
    _assert_redis_kept_data(data_dir)


def _assert_redis_kept_data(data_dir: Path) -> None:
    """Start a fresh redis-server on the same folder: the AOF must bring the key back."""
    assert redis_binary()
    proc, url = start_redis(data_dir)
    try:
        assert redis.Redis.from_url(url).get("hybridpool:test:durable") == b"kept"
    finally:
        proc.stop()


def _clean_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP", "REDIS_URL")}
