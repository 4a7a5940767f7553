"""A real Prometheus server (Debian's package) on loopback scrapes real service processes, loads the
project's alert rules, and through its own query API shows the services' metrics present and moving:
malformed messages raise hybridpool_dead_letters_total there and put HybridPoolDeadLetterGrowth
in the pending state."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from deploy.scripts import checks, render
from hybridpool_cli.infra import ManagedProcess, free_port, spawn
from hybridpool_shared import topics
from tests.infra import Infra, RunningService, produce, start_service, unique

pytestmark = pytest.mark.e2e

# Three consumers with different topics keep the run short on a shared two-core machine.
WATCHED = {
    "telemetry": topics.SITES_TELEMETRY.name,
    "balance": topics.PRICES_DAY_AHEAD.name,
    "dispatch": topics.MARKET_ACTIVATIONS.name,
}
TIMEOUT_S = 45.0


@dataclass
class PrometheusServer:
    """A Prometheus process and its HTTP API."""

    process: ManagedProcess
    url: str

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Run an instant query and return its vector."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5)
        response.raise_for_status()
        body = response.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, promql: str) -> float:
        """Return the single value of a query that sums to one series, 0 when it has none yet."""
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else 0.0

    def wait_for(self, promql: str, predicate: Any, what: str) -> float:
        """Poll a query until predicate(value) holds, or fail after TIMEOUT_S."""
        deadline = time.monotonic() + TIMEOUT_S
        last = None
        while time.monotonic() < deadline:
            last = self.value(promql)
            if predicate(last):
                return last
            time.sleep(0.5)
        targets = httpx.get(f"{self.url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        errors = {t["labels"].get("service"): t["lastError"] for t in targets if t["lastError"]}
        raise AssertionError(f"{what}: {promql} stayed at {last} for {TIMEOUT_S} s; scrape errors {errors}")


def _write_config(directory: Path, services: dict[str, RunningService]) -> Path:
    rules = directory / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": render.rule_groups()}, sort_keys=False))
    targets = [
        {"targets": [svc.url.removeprefix("http://")], "labels": {"service": name}}
        for name, svc in services.items()
    ]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [{"job_name": "hybridpool", "static_configs": targets}],
    }
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _start_prometheus(directory: Path, config: Path) -> PrometheusServer:
    binary = shutil.which("prometheus")
    assert binary, "prometheus not found: ./dev setup installs Debian's prometheus package"
    port = free_port()
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={directory / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=1h",
    ]
    process = spawn("prometheus", argv, directory / "prometheus.log")
    server = PrometheusServer(process, f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        if process.proc.poll() is not None:
            raise RuntimeError(f"prometheus exited: {process.log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{server.url}/-/ready", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.stop()
    raise TimeoutError(f"prometheus not ready: {process.log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def services(private_infra: Infra) -> Iterator[dict[str, RunningService]]:
    """The watched services as their own processes (started from this thread: they die with it)."""
    started: dict[str, RunningService] = {}
    try:
        for name in WATCHED:
            started[name] = start_service(name, private_infra)
        yield started
    finally:
        for svc in started.values():
            svc.process.stop()


@pytest.fixture(scope="module")
def prometheus(private_infra: Infra, services: dict[str, RunningService]) -> Iterator[PrometheusServer]:
    """A real Prometheus scraping the watched services every second, with the project's rules."""
    directory = private_infra.data_dir / unique("prometheus")
    directory.mkdir()
    server = _start_prometheus(directory, _write_config(directory, services))
    try:
        yield server
    finally:
        server.process.stop()


def test_every_service_is_scraped_and_reports_itself_up(prometheus: PrometheusServer) -> None:
    for name in WATCHED:
        prometheus.wait_for(f'up{{job="hybridpool", service="{name}"}}', lambda v: v == 1, f"{name} scraped")
        assert prometheus.value(f'hybridpool_service_up{{service="{name}"}}') == 1


def test_prometheus_ingests_every_monitored_metric_a_service_exposes(
    prometheus: PrometheusServer, services: dict[str, RunningService]
) -> None:
    """What a rule or dashboard queries and a service exposes arrives in Prometheus under that name."""
    monitored = set().union(*(checks.metric_names(e) for e in checks.rule_expressions().values()))
    for board in checks.dashboard_files().values():
        monitored |= set().union(*(checks.metric_names(e) for e in checks.dashboard_expressions(board)))
    for name, svc in services.items():
        text = httpx.get(f"{svc.url}/metrics", timeout=5).text
        exposed = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and line[0] != "#"}
        wanted = exposed & monitored
        assert "hybridpool_service_up" in wanted
        deadline = time.monotonic() + TIMEOUT_S
        stored: set[str] = set()
        while not wanted <= stored and time.monotonic() < deadline:
            time.sleep(0.5)
            stored = {
                r["metric"]["__name__"] for r in prometheus.query(f'{{job="hybridpool", service="{name}"}}')
            }
        assert wanted <= stored, f"{name}: {sorted(wanted - stored)} not in Prometheus"


def test_the_project_rules_load_and_evaluate_without_errors(prometheus: PrometheusServer) -> None:
    expected = {rule["alert"] for rule in checks.alerts()}
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        groups = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=5).json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        evaluated = [rule for rule in rules if rule.get("lastEvaluation", "").startswith("20")]
        if len(evaluated) == len(rules) == len(expected) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert {rule["name"] for rule in rules} == expected
    assert all(rule["health"] == "ok" for rule in rules), [r for r in rules if r["health"] != "ok"]


def test_malformed_messages_move_the_dead_letter_counter_in_prometheus(
    private_infra: Infra, prometheus: PrometheusServer
) -> None:
    infra = private_infra  # malformed messages stay off the broker other tests read

    def dead(name: str) -> str:
        return f'sum(hybridpool_dead_letters_total{{service="{name}", topic="{WATCHED[name]}"}})'

    def received(name: str) -> str:
        if name == "telemetry":  # sites.telemetry is read by hybridpool_shared.fastbatch, not FastStream
            return (
                f'sum(hybridpool_batch_duration_seconds_count{{service="{name}", topic="{WATCHED[name]}"}})'
            )
        return f'sum(faststream_received_messages_total{{service="{name}", handler=~".*{WATCHED[name]}.*"}})'

    marker = unique("scrape")
    before = {name: prometheus.value(dead(name)) for name in WATCHED}
    seen = {name: prometheus.value(received(name)) for name in WATCHED}
    for topic in WATCHED.values():
        _produce(infra, topic, f'{{"{marker}": 1}}'.encode())
    first = {
        name: prometheus.wait_for(dead(name), lambda v, b=before[name]: v >= b + 1, f"{name} dead letter")
        for name in WATCHED
    }
    for name in WATCHED:
        assert prometheus.value(received(name)) > seen[name], f"{name}: its consumer's counter did not move"

    # A second batch: the counter series now exists, so the alert's increase() sees it grow.
    for topic in WATCHED.values():
        for _ in range(3):
            _produce(infra, topic, f'{{"{marker}": 2}}'.encode())
    for name in WATCHED:
        prometheus.wait_for(dead(name), lambda v, f=first[name]: v >= f + 3, f"{name} dead letters")
    prometheus.wait_for(
        'count(ALERTS{alertname="HybridPoolDeadLetterGrowth", service="telemetry"})',
        lambda v: v >= 1,
        "HybridPoolDeadLetterGrowth pending for telemetry",
    )


def _produce(infra: Infra, topic: str, value: bytes) -> None:
    """Publish one raw record from sync test code."""
    asyncio.run(produce(infra.kafka_bootstrap, topic, value))
