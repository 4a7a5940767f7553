"""The Grafana dashboards as data: a few panel builders and the two dashboards (pool, services).

Rendered to deploy/grafana/dashboards/*.json (provisioned in compose) and into a ConfigMap for
Kubernetes by deploy/scripts/render.py. Every query uses only metrics the services register
(or the Kafka exporter's consumer lag); tests/unit/test_deploy_monitoring.py checks that.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
WIDTH = 24


@dataclass(frozen=True)
class Query:
    """One PromQL query of a panel and how its series are named in the legend."""

    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    """A time series or stat panel of a given width (of 24) and height."""

    title: str
    queries: tuple[Query, ...]
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 12
    height: int = 8
    description: str = ""
    thresholds: tuple[tuple[float | None, str], ...] = field(default=((None, "green"),))


@dataclass(frozen=True)
class Row:
    """A titled row that groups the panels below it."""

    title: str
    panels: tuple[Panel, ...]


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    targets = [
        {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": q.expr, "legendFormat": q.legend}
        for i, q in enumerate(panel.queries)
    ]
    steps = [{"value": value, "color": color} for value, color in panel.thresholds]
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "targets": targets,
        "fieldConfig": {
            "defaults": {"unit": panel.unit, "thresholds": {"mode": "absolute", "steps": steps}},
            "overrides": [],
        },
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}}
        if panel.kind == "timeseries"
        else {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "background"},
    }


def dashboard(uid: str, title: str, rows: tuple[Row, ...], description: str) -> dict[str, Any]:
    """Return a Grafana dashboard (schema 39) laying out rows of panels left to right."""
    panels: list[dict[str, Any]] = []
    y = 0
    panel_id = 1
    for row in rows:
        panels.append(
            {
                "id": panel_id,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": WIDTH, "x": 0, "y": y},
                "panels": [],
            }
        )
        panel_id += 1
        y += 1
        x = 0
        row_height = 0
        for panel in row.panels:
            if x + panel.width > WIDTH:
                x, y, row_height = 0, y + row_height, 0
            panels.append(_panel_json(panel, panel_id, x, y))
            panel_id += 1
            x += panel.width
            row_height = max(row_height, panel.height)
        y += row_height
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["hybridpool"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": []},
        "annotations": {"list": []},
        "panels": panels,
    }


def to_json(board: dict[str, Any]) -> str:
    """Return a dashboard as stable, human-diffable JSON."""
    return json.dumps(board, indent=2, ensure_ascii=False) + "\n"


def _rate(metric: str, selector: str, by: str, window: str = "5m") -> str:
    return f"sum by ({by}) (rate({metric}{{{selector}}}[{window}]))"


def _p(quantile: float, metric: str, selector: str, by: str = "le") -> str:
    return f"histogram_quantile({quantile}, sum by ({by}) (rate({metric}_bucket{{{selector}}}[5m])))"


RED_GREEN = ((None, "red"), (1.0, "green"))

POOL = dashboard(
    "hybridpool-pool",
    "HybridPool — pool",
    (
        Row(
            "Capacity and telemetry",
            (
                Panel(
                    "Capacity that could be switched now",
                    (
                        Query(
                            "max by (direction) (hybridpool_dispatch_capacity_available_kw) / 1000",
                            "{{direction}}",
                        ),
                    ),
                    unit="MW",
                    description="Up: running heat pumps that may stop; down: rested ones that may start "
                    "(dispatch's view, lock-outs and minimum run times respected).",
                ),
                Panel(
                    "Sites by telemetry status",
                    (Query("max by (status) (hybridpool_telemetry_sites)", "{{status}}"),),
                    description="ok / stale (no reading for 3 min) / offline (15 min), by telemetry.",
                ),
                Panel(
                    "Telemetry readings by outcome",
                    (Query(_rate("hybridpool_telemetry_readings_total", "", "outcome"), "{{outcome}}"),),
                    unit="reqps",
                ),
                Panel(
                    "Telemetry lag (reading → live state in Redis)",
                    (
                        Query(_p(0.5, "hybridpool_telemetry_lag_seconds", ""), "p50"),
                        Query(_p(0.99, "hybridpool_telemetry_lag_seconds", ""), "p99"),
                    ),
                    unit="s",
                ),
            ),
        ),
        Row(
            "Activations and reaction",
            (
                Panel(
                    "Activations being served",
                    (Query("max(hybridpool_dispatch_activations_active)", "activations"),),
                    kind="stat",
                    width=6,
                ),
                Panel(
                    "Commands to sites",
                    (Query(_rate("hybridpool_dispatch_commands_total", "", "event"), "{{event}}"),),
                    unit="reqps",
                    width=9,
                    description="sent, acked, rejected, expired, resent, refused (safety rules).",
                ),
                Panel(
                    "Reaction time p90 by phase",
                    (
                        Query(
                            _p(0.9, "hybridpool_dispatch_reaction_seconds", "", "le, phase").replace(
                                "[5m]", "[15m]"
                            ),
                            "{{phase}}",
                        ),
                    ),
                    unit="s",
                    width=9,
                    description="Command sent → acknowledged → first power change → 50 % → 90 % → stable.",
                    thresholds=((None, "green"), (30.0, "red")),
                ),
            ),
        ),
        Row(
            "Prices and bids",
            (
                Panel(
                    "Price data age",
                    (Query("max by (dataset) (price_ingest_data_age_seconds)", "{{dataset}}"),),
                    unit="s",
                    width=8,
                    description="Seconds since each dataset was last fetched successfully.",
                ),
                Panel(
                    "Day-ahead prices known ahead",
                    (
                        Query(
                            'max(price_ingest_latest_interval_end_timestamp_seconds{dataset="DayAheadPrices"})'
                            " - time()",
                            "ahead",
                        ),
                    ),
                    unit="s",
                    kind="stat",
                    width=4,
                    thresholds=((None, "red"), (9 * 3600.0, "green")),
                ),
                Panel(
                    "Price records ingested",
                    (Query(_rate("price_ingest_records_total", "", "outcome"), "{{outcome}}"),),
                    unit="reqps",
                    width=6,
                ),
                Panel(
                    "Plans and bids published",
                    (
                        Query(
                            _rate("faststream_published_messages_total", 'app_name="bidding"', "destination"),
                            "{{destination}}",
                        ),
                    ),
                    unit="reqps",
                    width=6,
                ),
                Panel(
                    "Balance prices published",
                    (Query("sum(rate(hybridpool_balance_prices_published_total[5m]))", "per second"),),
                    unit="reqps",
                    width=12,
                    description="Per site and quarter-hour: where heat pump and gas cost the same.",
                ),
                Panel(
                    "Balance computation p95 (per chunk)",
                    (Query(_p(0.95, "hybridpool_balance_compute_seconds", ""), "p95"),),
                    unit="s",
                    width=12,
                ),
                Panel(
                    "Symmetric capacity bid",
                    (Query("max(hybridpool_bidding_symmetric_bid_mw)", "MW"),),
                    unit="MW",
                    kind="stat",
                    width=6,
                    description="Sum of the latest capacity bids (up = down).",
                ),
                Panel(
                    "Latest plan is the fallback",
                    (Query("max(hybridpool_bidding_plan_fallback)", "fallback"),),
                    kind="stat",
                    width=5,
                    thresholds=((None, "green"), (1.0, "red")),
                ),
                Panel(
                    "Solver failures (6 h)",
                    (Query("sum(increase(hybridpool_bidding_solver_failures_total[6h]))", "failures"),),
                    kind="stat",
                    width=4,
                    thresholds=((None, "green"), (1.0, "orange")),
                ),
                Panel(
                    "Planning time p95",
                    (Query(_p(0.95, "hybridpool_bidding_plan_seconds", "").replace("[5m]", "[1h]"), "p95"),),
                    unit="s",
                    width=9,
                ),
            ),
        ),
        Row(
            "Service health",
            (
                Panel(
                    "Services up",
                    (Query('up{job="hybridpool"}', "{{service}}"),),
                    kind="stat",
                    width=24,
                    height=4,
                    thresholds=RED_GREEN,
                ),
            ),
        ),
    ),
    "The pool at a glance: capacity, activations and reaction, prices and bids, service health.",
)

SERVICES = dashboard(
    "hybridpool-services",
    "HybridPool — services",
    (
        Row(
            "Health",
            (
                Panel(
                    "Scrape up",
                    (Query('up{job="hybridpool"}', "{{service}} {{instance}}"),),
                    kind="stat",
                    width=12,
                    height=5,
                    thresholds=RED_GREEN,
                ),
                Panel(
                    "Service up (self-reported)",
                    (Query("sum by (service) (hybridpool_service_up)", "{{service}}"),),
                    kind="stat",
                    width=12,
                    height=5,
                    thresholds=RED_GREEN,
                ),
            ),
        ),
        Row(
            "Throughput and failures",
            (
                Panel(
                    "Messages processed",
                    (
                        Query(
                            _rate("hybridpool_messages_processed_total", "", "service, topic"),
                            "{{service}} {{topic}}",
                        ),
                    ),
                    unit="reqps",
                ),
                Panel(
                    "Dead letters",
                    (
                        Query(
                            _rate("hybridpool_dead_letters_total", "", "service, topic, reason"),
                            "{{service}} {{topic}} {{reason}}",
                        ),
                    ),
                    unit="reqps",
                ),
                Panel(
                    "Retries",
                    (
                        Query(
                            _rate("hybridpool_message_retries_total", "", "service, topic"),
                            "{{service}} {{topic}}",
                        ),
                    ),
                    unit="reqps",
                ),
                Panel(
                    "Handler exceptions",
                    (
                        Query(
                            _rate(
                                "faststream_received_processed_messages_exceptions_total",
                                "",
                                "app_name, exception_type",
                            ),
                            "{{app_name}} {{exception_type}}",
                        ),
                    ),
                    unit="reqps",
                ),
            ),
        ),
        Row(
            "Latency and lag",
            (
                Panel(
                    "Handler time p95",
                    (
                        Query(
                            _p(
                                0.95,
                                "faststream_received_processed_messages_duration_seconds",
                                "",
                                "le, app_name",
                            ),
                            "{{app_name}}",
                        ),
                    ),
                    unit="s",
                ),
                Panel(
                    "Batch time p95 (raw batch consumers)",
                    (
                        Query(
                            _p(0.95, "hybridpool_batch_duration_seconds", "", "le, service, topic"),
                            "{{service}} {{topic}}",
                        ),
                    ),
                    unit="s",
                    description="Hot topics read without FastStream (telemetry's sites.telemetry): "
                    "records consumed → offsets committable.",
                ),
                Panel(
                    "Consumer lag",
                    (
                        Query(
                            "sum by (consumergroup, topic) "
                            '(kafka_consumergroup_lag{consumergroup=~"hybridpool[.].+"})',
                            "{{consumergroup}}",
                        ),
                    ),
                    description="Messages not yet consumed per group (Kafka exporter).",
                ),
                Panel(
                    "Messages in process",
                    (
                        Query(
                            "sum by (app_name) (faststream_received_messages_in_process)",
                            "{{app_name}}",
                        ),
                    ),
                ),
                Panel(
                    "Publish time p95",
                    (
                        Query(
                            _p(0.95, "faststream_published_messages_duration_seconds", "", "le, app_name"),
                            "{{app_name}}",
                        ),
                    ),
                    unit="s",
                ),
            ),
        ),
    ),
    "Every service: up, throughput, dead letters, retries, handler latency, consumer lag.",
)

ALL: dict[str, dict[str, Any]] = {"pool": POOL, "services": SERVICES}
