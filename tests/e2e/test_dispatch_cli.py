"""`hybridpool test-activation` end to end: the CLI finds dispatch through the platform's state file,
starts a test on a live pool of simulated villas (site_sim, 20× real time) and prints the report;
an activation the pool cannot carry is reported as failed, with the reason, and a non-zero exit."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.infra import Infra, RunningService, start_service, unique

# Dispatch follows every activation on the topic and every site state in Redis: other tests' would interfere.
pytestmark = [pytest.mark.e2e, pytest.mark.private_infra]
SPEEDUP = "20"


@pytest.fixture(scope="module")
def platform(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """site_sim and dispatch as processes, described in a state file like `hybridpool up` writes."""
    prefix = unique("cli")
    started: list[RunningService] = []
    try:
        started.append(
            start_service(
                "site_sim",
                infra,
                {
                    "SITE_SIM_SITES": "200",
                    "SITE_SIM_SITE_PREFIX": prefix,
                    "SITE_SIM_SPEEDUP": SPEEDUP,
                    "SITE_SIM_TELEMETRY_INTERVAL_S": "30",
                    "SITE_SIM_REGISTER_FLEET": "false",
                },
            )
        )
        started.append(
            start_service(
                "dispatch",
                infra,
                {
                    "DISPATCH_SITE_PREFIX": prefix,
                    "DISPATCH_CLOCK": "telemetry",
                    "DISPATCH_SPEEDUP": SPEEDUP,
                    "DISPATCH_TICK_S": "0.25",
                    "DISPATCH_ACK_TIMEOUT_S": "40",
                    "DISPATCH_FOLLOW_PLAN": "false",
                },
            )
        )
        data_dir = tmp_path_factory.mktemp("platform")
        services = [
            {
                "name": s.name,
                "pid": s.process.proc.pid,
                "port": int(s.url.rsplit(":", 1)[1]),
                "log": str(s.process.log),
            }
            for s in started
        ]
        state = {"kafka_bootstrap": infra.kafka_bootstrap, "redis_url": infra.redis_url, "services": services}
        (data_dir / "infra.json").write_text(json.dumps(state))
        _wait_for_capacity(started[1].url)
        yield data_dir
    finally:
        for svc in started:
            svc.process.stop()


def _wait_for_capacity(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        cap = httpx.get(f"{url}/capacity", timeout=5).json()
        if cap["up"] > 150:
            return
        time.sleep(0.5)
    raise TimeoutError(f"dispatch saw too little capacity: {cap}")


def _cli(data_dir: Path, *args: str) -> subprocess.Popen[str]:
    argv = [
        sys.executable,
        "-m",
        "hybridpool_cli.main",
        "test-activation",
        "--data-dir",
        str(data_dir),
        *args,
    ]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_cli_runs_a_test_activation_and_prints_the_report(platform: Path, tmp_path: Path) -> None:
    curve = tmp_path / "curve.csv"
    ok = _cli(platform, "--product", "mfrr", "--mw", "0.1", "--duration", "5m", "--csv", str(curve))
    too_big = _cli(platform, "--product", "mfrr", "--direction", "down", "--mw", "20", "--duration", "60s")
    ok_out, _ = ok.communicate(timeout=120)
    big_out, _ = too_big.communicate(timeout=120)

    assert ok.returncode == 0, ok_out
    assert "PASSED" in ok_out
    assert "100% within 750 s" in ok_out
    assert "dispatched" in ok_out
    assert curve.read_text().startswith("at_utc,seconds_since_start,delivered_kw,requested_kw")

    assert too_big.returncode == 1, big_out
    assert "FAILED" in big_out
    assert "too few available units" in big_out
