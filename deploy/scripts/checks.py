"""Helpers the deployment tests share: build manifests, find PromQL metrics, list exported metrics."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import yaml

from deploy.scripts import kustomize_lite, render

REPO = render.REPO

# Metrics that come from outside the services: Prometheus itself and the Kafka exporter that the
# compose file and the Strimzi Kafka resource run (kafkaExporter), documented in docs/deploy.md.
EXTERNAL_METRICS: dict[str, str] = {
    "up": "Prometheus (scrape health)",
    "kafka_consumergroup_lag": "Kafka exporter (danielqsj/kafka-exporter, Strimzi kafkaExporter)",
    "kafka_topic_partition_under_replicated_partition": "Kafka exporter",
}
# A template's {{ query "..." }}: its PromQL must name real metrics too.
ANNOTATION_QUERY = re.compile(r'query "((?:[^"\\]|\\.)*)"')
SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created", ""),
    "gauge": ("",),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """Build a kustomization with kubectl's kustomize when installed, else with kustomize_lite."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return kustomize_lite.build(directory)
    out = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=True)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def metric_names(expr: str) -> set[str]:
    """Return the metric names a PromQL expression selects (parsed, not pattern-matched)."""
    return set(_selectors(promql_parser.parse(expr)))


def _selectors(node: Any) -> Iterator[str]:
    if isinstance(node, promql_parser.VectorSelector):
        if node.name:
            yield node.name
        for matcher in node.matchers.matchers:
            if matcher.name == "__name__":
                yield matcher.value
        return
    for attr in ("expr", "lhs", "rhs", "vector_selector", "param"):
        child = getattr(node, attr, None)
        if child is not None and not isinstance(child, (str, int, float)):
            yield from _selectors(child)
    for arg in getattr(node, "args", None) or ():
        yield from _selectors(arg)


def rule_expressions() -> dict[str, str]:
    """Return every rule's expression, and the queries its annotation templates run, by rule name."""
    found: dict[str, str] = {}
    for group in render.rule_groups():
        for rule in group["rules"]:
            name = rule.get("alert") or rule["record"]
            found[name] = rule["expr"]
            for key, text in rule.get("annotations", {}).items():
                for i, query in enumerate(ANNOTATION_QUERY.findall(text)):
                    found[f"{name} {key} query {i}"] = query.replace('\\"', '"')
    return found


def alerts() -> list[dict[str, Any]]:
    """Return every alerting rule."""
    return [rule for group in render.rule_groups() for rule in group["rules"] if "alert" in rule]


def dashboard_files() -> dict[str, dict[str, Any]]:
    """Return the committed Grafana dashboards by file name."""
    folder = REPO / render.DASHBOARDS_DIR
    return {path.name: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}


def dashboard_expressions(board: dict[str, Any]) -> list[str]:
    """Return every PromQL expression in a dashboard's panels and template variables."""
    exprs = [t["expr"] for panel in board["panels"] for t in panel.get("targets", []) if t.get("expr")]
    for variable in board.get("templating", {}).get("list", []):
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if variable.get("type") == "query" and query:
            exprs.append(str(query))
    return exprs


def exported_metrics(services: tuple[str, ...]) -> dict[str, set[str]]:
    """Return, per service, the sample names its /metrics can expose (built, not run)."""
    found: dict[str, set[str]] = {}
    for name in services:
        service = build_service(name, kafka_bootstrap="127.0.0.1:9", redis_url="redis://127.0.0.1:9/0")
        names: set[str] = set()
        for family in service.metrics.registry.collect():
            names |= {family.name + suffix for suffix in SAMPLE_SUFFIXES[family.type]}
        found[name] = names
    return found


def build_service(name: str, **settings_values: Any) -> Any:
    """Build (not start) a service from its settings class, the environment and settings_values."""
    app = importlib.import_module(f"services.{name}.app")
    settings_module = importlib.import_module(f"services.{name}.settings")
    settings_cls = next(
        value
        for key, value in vars(settings_module).items()
        if key.endswith("Settings") and key != "ServiceSettings" and isinstance(value, type)
    )
    # Addresses are only stored at build time; nothing connects until the service starts.
    return app.build(settings_cls(**settings_values))
