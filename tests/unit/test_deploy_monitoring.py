"""Prometheus config and alert rules pass promtool (syntax and rule unit tests); Grafana dashboards are
valid and every metric that a rule or a dashboard queries is one the services really register."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from deploy.scripts import checks, dashboards, render
from hybridpool_cli.supervisor import SERVICES

REPO = render.REPO
PROMETHEUS = REPO / "deploy" / "prometheus"
GRAFANA = REPO / "deploy" / "grafana"
RUNBOOK = REPO / "docs" / "runbook.md"
# The alerts the operators asked for, by concern: at least one rule per concern must exist.
REQUIRED_ALERTS = {
    "consumer lag": "HybridPoolConsumerLagHigh",
    "stale telemetry": "HybridPoolTelemetryStale",
    "activation at risk": "HybridPoolActivationAtRisk",
    "solver fallback": "HybridPoolSolverFallback",
    "dead-letter growth": "HybridPoolDeadLetterGrowth",
}


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: ./dev setup installs Debian's prometheus package"
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60, cwd=PROMETHEUS)


@pytest.fixture(scope="module")
def exported() -> set[str]:
    """Every sample name any service's /metrics can expose, plus the documented external metrics."""
    per_service = checks.exported_metrics(SERVICES)
    return set().union(*per_service.values()) | set(checks.EXTERNAL_METRICS)


def test_prometheus_config_passes_promtool() -> None:
    result = _promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_alert_rules_pass_promtool() -> None:
    rule_files = sorted(str(p.relative_to(PROMETHEUS)) for p in (PROMETHEUS / "rules").glob("*.yml"))
    assert rule_files
    result = _promtool("check", "rules", *rule_files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_fire_on_their_failures() -> None:
    """promtool's rule unit tests: each alert fires on synthetic series of its failure, not before."""
    result = _promtool("test", "rules", "tests/alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", (PROMETHEUS / "tests" / "alerts.test.yml").read_text()))
    assert tested == {rule["alert"] for rule in checks.alerts()}, "every alert needs a promtool test"


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(
        yaml.safe_dump({"groups": [{"name": "x", "rules": [{"alert": "X", "expr": "sum(rate(x[5m])"}]}]})
    )
    assert _promtool("check", "rules", str(broken)).returncode != 0


def test_the_alerts_the_operators_need_exist_with_severity_and_runbook() -> None:
    rules = {rule["alert"]: rule for rule in checks.alerts()}
    missing = {concern: name for concern, name in REQUIRED_ALERTS.items() if name not in rules}
    assert not missing
    runbook = RUNBOOK.read_text()
    headings = {line[4:].strip().lower() for line in runbook.splitlines() if line.startswith("### ")}
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]
        assert rule["annotations"]["runbook_url"] == f"docs/runbook.md#{name.lower()}"
        assert name.lower() in headings, f"docs/runbook.md has no section '### {name}'"
    assert headings == {name.lower() for name in rules}, "a runbook section for an alert that does not exist"


def test_rules_query_only_metrics_that_exist(exported: set[str]) -> None:
    for name, expr in checks.rule_expressions().items():
        unknown = checks.metric_names(expr) - exported
        assert not unknown, f"{name} queries metrics no service exports: {sorted(unknown)}"


def test_dashboards_query_only_metrics_that_exist(exported: set[str]) -> None:
    boards = checks.dashboard_files()
    assert set(boards) == {"pool.json", "services.json"}
    for file, board in boards.items():
        exprs = checks.dashboard_expressions(board)
        assert exprs
        for expr in exprs:
            unknown = checks.metric_names(expr) - exported
            assert not unknown, f"{file}: {expr!r} queries metrics no service exports: {sorted(unknown)}"


def test_the_metric_check_catches_a_misspelt_metric(exported: set[str]) -> None:
    assert checks.metric_names("rate(hybridpool_dead_letter_total[5m])") - exported == {
        "hybridpool_dead_letter_total"
    }


def test_dashboards_are_valid_grafana_json_on_the_provisioned_datasource() -> None:
    datasource = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    uid = datasource["datasources"][0]["uid"]
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "hybridpool.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    uids = set()
    for file, board in checks.dashboard_files().items():
        uids.add(board["uid"])
        assert board["title"]
        assert isinstance(board["schemaVersion"], int)
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), f"{file}: duplicate panel ids"
        for panel in board["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= dashboards.WIDTH
            for target in panel.get("targets", []):
                assert target["datasource"]["uid"] == uid
                assert target["refId"]
    assert len(uids) == len(checks.dashboard_files())


def test_pool_dashboard_covers_capacity_activations_reaction_prices_and_health() -> None:
    titles = " ".join(
        panel["title"].lower()
        for panel in checks.dashboard_files()["pool.json"]["panels"]
        if panel["type"] == "row"
    )
    for topic in ("capacity", "activation", "reaction", "prices", "health"):
        assert topic in titles


def test_compose_prometheus_scrapes_every_service() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "hybridpool"]
    scraped = {target["labels"]["service"]: target["targets"] for target in job["static_configs"]}
    assert scraped == {name: [f"{name}:8000"] for name in SERVICES}
