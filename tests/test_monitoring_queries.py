"""The monitoring that ships with incidentd queries only what the service exports: the Grafana
dashboard (deploy/grafana) and the alert rules (deploy/prometheus, the chart's PrometheusRule),
checked against a running service's ``GET /metrics``."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.scrape import Scrape, scrape
from tests.support.service import RunningService, run_service, test_settings

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
RULES_FILE = DEPLOY / "prometheus" / "incidentd-rules.yaml"


@pytest.fixture(scope="module")
async def scraped(kafka: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Scrape]:
    """A running service's ``GET /metrics``."""
    tmp = tmp_path_factory.mktemp("monitoring")
    svc: RunningService
    async with run_service(test_settings(kafka, tmp)) as svc:
        yield await scrape(svc)


@pytest.fixture
def exported(scraped: Scrape) -> frozenset[str]:
    """The metric names it exports (histograms as their _bucket/_sum/_count)."""
    return scraped.names


def test_the_metrics_follow_prometheus_naming(scraped: Scrape) -> None:
    """``promtool check metrics``: units as suffixes, counters ending in _total, help texts."""
    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=scraped.text, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "incidentd_alerts_received_total" in scraped.text


DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "incidentd-dashboard.json"
# Every query selects its series with {job=~"$job"...}: the name before a brace is a metric.
SELECTED = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{")
NAMED = re.compile(r"\bincidentd_[a-z0-9_]+")
NEW = {
    "incidentd_build_info",
    "incidentd_kafka_consumer_lag_records",
    "incidentd_outbox_pending_events",
    "incidentd_outbox_oldest_pending_age_seconds",
    "incidentd_pages_pending",
    "incidentd_page_oldest_pending_age_seconds",
    "incidentd_pager_request_duration_seconds_bucket",
    "incidentd_incident_time_to_acknowledge_seconds_bucket",
    "incidentd_incident_time_to_resolve_seconds_bucket",
    "incidentd_webhook_requests_refused_total",
    "incidentd_webhook_alerts_accepted_total",
    "incidentd_alerts_received_total",
}


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    return exprs + [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]


async def test_the_dashboard_queries_only_metrics_the_service_exports(exported: frozenset[str]) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert all(p.get("targets") for p in panels), "a panel without a query"
    assert all(p["datasource"]["uid"] == "${datasource}" for p in panels)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))

    queries = dashboard_queries(dashboard)
    used = {name for q in queries for name in SELECTED.findall(q) + NAMED.findall(q)}
    # `up` is Prometheus' own series for the scrape job (the instance-down alert's).
    assert used - exported == {"up"}
    assert all('job=~"$job"' in q for q in queries if "{" in q)
    assert NEW <= used


async def test_the_alert_rules_use_only_metrics_the_service_exports(exported: frozenset[str]) -> None:
    rules = [r for g in yaml.safe_load(RULES_FILE.read_text())["groups"] for r in g["rules"]]
    used = {name for r in rules for name in SELECTED.findall(r["expr"]) + NAMED.findall(r["expr"])}
    # `up` is Prometheus' own series for the scrape job.
    assert used - exported == {"up"}
    assert {r["alert"] for r in rules} >= {"IncidentdDown", "IncidentdAllInstancesDown"}
