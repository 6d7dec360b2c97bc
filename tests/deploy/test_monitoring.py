"""The monitoring component and the Grafana dashboard agree with the code.

Every metric an alert rule or a dashboard panel names is one the services
export (the names derived from the metric objects by prometheus-client
itself: ``_total``, ``_bucket``, ``_count``, ...); the ServiceMonitor scrapes
every server's metrics port; the custom resources follow their schemas in
deploy/schemas (test_schemas.py shows those refuse what they should); every
alert has a promtool unit test. ``promtool`` itself runs in deploy/check.sh.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

import pytest
import yaml
from deploy.custom_resources import is_custom, problems, rule_groups
from deploy.manifests import (
    K8S_DIR,
    OVERLAYS,
    Object,
    Rendered,
    component,
    container_port,
    env_values,
    kubectl,
    render,
    selector_matches,
    the_container,
)
from meshtest import REPO_ROOT
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from agentmesh.telemetry import metrics as metrics_module

pytestmark = pytest.mark.skipif(kubectl() is None, reason="kubectl is not installed")

DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "agentmesh.json"
ALERT_TESTS = K8S_DIR / "components" / "monitoring" / "alerts.test.yaml"
# Every agentmesh metric is named agentmesh_*: a name of that shape in a query
# is a reference to one (PromQL keywords and functions never start so).
METRIC_REFERENCE = re.compile(r"\bagentmesh_[a-zA-Z0-9_]*")
# What the issue asked the alerts to watch, by the metric each one reads.
ALERTED_METRICS = {
    "breaker open": "agentmesh_breaker_state",
    "error ratio per agent": "agentmesh_upstream_requests_total",
    "p99 latency per agent": "agentmesh_upstream_duration_seconds_bucket",
    "rate-limited callers": "agentmesh_rate_limited_total",
    "job backlog": "agentmesh_jobs_active",
    "model spend rate": "agentmesh_llm_cost_usd_total",
}


@pytest.fixture(scope="module")
def overlays() -> dict[str, Rendered]:
    return {name: Rendered(name, render(K8S_DIR / "overlays" / name)) for name in OVERLAYS}


@pytest.fixture(scope="module")
def prod(overlays: dict[str, Rendered]) -> Rendered:
    return overlays["prod"]


@functools.cache
def exported_metric_names() -> frozenset[str]:
    """Every sample name the services' metrics produce, as prometheus-client names them.

    For each metric object in ``agentmesh.telemetry.metrics`` an unlabelled
    twin of the same type and name is made in a private registry, and its
    samples' names are read back, so the suffixes (``_total``, ``_created``,
    ``_bucket``, ``_count``, ``_sum``) are prometheus-client's own.
    """
    names: set[str] = set()
    for value in vars(metrics_module).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        for family in value.describe():
            registry = CollectorRegistry()
            type(value)(family.name, family.documentation, registry=registry)
            names.update(sample.name for fam in registry.collect() for sample in fam.samples)
    return frozenset(names)


def _rules(rendered: Rendered) -> list[Object]:
    return [rule for group in rule_groups(rendered.objects) for rule in group["rules"]]


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def _dashboard_queries() -> dict[str, str]:
    """Every PromQL query of the dashboard: panel targets and template variables."""
    dashboard = _dashboard()
    queries = {
        f"panel {panel['title']!r} {target['refId']}": target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    }
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            queries[f"variable {variable['name']}"] = variable["query"]["query"]
    return queries


def test_the_exported_names_come_from_prometheus_client() -> None:
    names = exported_metric_names()
    # A counter, a histogram and a gauge, as a scrape of /metrics shows them.
    assert {"agentmesh_rpc_requests_total", "agentmesh_rpc_requests_created"} <= names
    assert {
        "agentmesh_rpc_duration_seconds_bucket",
        "agentmesh_rpc_duration_seconds_count",
        "agentmesh_rpc_duration_seconds_sum",
    } <= names
    assert "agentmesh_rpc_in_flight" in names
    assert "agentmesh_rpc_requests" not in names
    assert "agentmesh_rpc_duration_seconds" not in names


def test_every_metric_a_rule_or_a_panel_names_is_exported(prod: Rendered) -> None:
    queries = {f"rule {r['alert']}": r["expr"] for r in _rules(prod)} | _dashboard_queries()
    assert len(queries) > 20
    unknown = {
        where: sorted(set(METRIC_REFERENCE.findall(expr)) - exported_metric_names())
        for where, expr in queries.items()
    }
    assert {where: names for where, names in unknown.items() if names} == {}
    # And each query is about agentmesh's own metrics.
    assert [where for where, expr in queries.items() if not METRIC_REFERENCE.search(expr)] == []


def test_the_alerts_watch_what_operators_asked_for(prod: Rendered) -> None:
    read = {name for rule in _rules(prod) for name in METRIC_REFERENCE.findall(rule["expr"])}
    assert {what: metric for what, metric in ALERTED_METRICS.items() if metric not in read} == {}
    for rule in _rules(prod):
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]


def test_every_alert_has_a_promtool_unit_test(prod: Rendered) -> None:
    tests = yaml.safe_load(ALERT_TESTS.read_text(encoding="utf-8"))
    fired = {
        case["alertname"]
        for test in tests["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert fired == {rule["alert"] for rule in _rules(prod)}


def test_prod_is_monitored_and_dev_needs_no_prometheus_operator(
    overlays: dict[str, Rendered],
) -> None:
    kinds = {name: {o["kind"] for o in r.objects if is_custom(o)} for name, r in overlays.items()}
    assert kinds == {"dev": set(), "prod": {"PrometheusRule", "ServiceMonitor"}}


def test_custom_resources_follow_their_schemas(overlays: dict[str, Rendered]) -> None:
    for rendered in overlays.values():
        for obj in rendered.objects:
            if is_custom(obj):
                assert problems(obj) == [], rendered.name


def test_the_service_monitor_scrapes_every_server_and_nothing_else(prod: Rendered) -> None:
    monitor = prod.get("ServiceMonitor", "agentmesh")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    selected = {
        s["metadata"]["name"]: s
        for s in prod.of_kind("Service")
        if selector_matches(monitor["spec"]["selector"], s["metadata"].get("labels", {}))
    }
    servers = {d["metadata"]["name"]: d for d in prod.servers()}
    assert set(selected) == set(servers)
    for name, service in selected.items():
        (port,) = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
        container = the_container(servers[name])
        # The Service's port leads to the container's metrics port, where the
        # server listens (AGENTMESH_METRICS_PORT).
        assert port["targetPort"] == "metrics"
        assert (
            str(container_port(container, "metrics"))
            == (env_values(container)["AGENTMESH_METRICS_PORT"])
        )
        assert component(service) in {"gateway", "agent"}


def test_the_dashboard_is_a_grafana_dashboard_on_a_chosen_prometheus() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] == "agentmesh"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            # Every panel follows the namespace picked at the top.
            assert 'namespace="$namespace"' in target["expr"], panel["title"]
