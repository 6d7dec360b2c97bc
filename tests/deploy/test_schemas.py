"""The JSON Schemas in deploy/schemas refuse what Kubernetes would refuse.

The monitoring component's ServiceMonitor and PrometheusRule, as written in
deploy/k8s/components/monitoring/, follow their schemas; the same objects
with a misspelt or unknown field, a value of the wrong type, a duration that
is not one or a missing required field do not; and the script deploy/check.sh
runs fails on them. None of this needs kubectl (test_monitoring.py checks the
rendered overlays).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy.custom_resources import SCHEMA_DIR, Object, is_custom, problems, schemas
from deploy.manifests import K8S_DIR

MONITORING = K8S_DIR / "components" / "monitoring"
CHECK_SCRIPT = Path(__file__).with_name("custom_resources.py")


def _load(name: str) -> Object:
    loaded: Object = yaml.safe_load((MONITORING / name).read_text(encoding="utf-8"))
    return loaded


def monitor() -> Object:
    return _load("servicemonitor.yaml")


def rule() -> Object:
    return _load("prometheusrule.yaml")


def _endpoint(obj: Object) -> Object:
    endpoint: Object = obj["spec"]["endpoints"][0]
    return endpoint


def _expression(obj: Object) -> Object:
    expression: Object = obj["spec"]["selector"]["matchExpressions"][0]
    return expression


def _rule(obj: Object) -> Object:
    first: Object = obj["spec"]["groups"][0]["rules"][0]
    return first


def _rename(mapping: Object, old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


# (what is wrong, the object, the change, where the problem is, what it says)
BROKEN: list[tuple[str, Callable[[], Object], Callable[[Object], None], str, str]] = [
    (
        "misspelt endpoint field",
        monitor,
        lambda o: _rename(_endpoint(o), "port", "prot"),
        "spec.endpoints.0",
        "'prot' was unexpected",
    ),
    (
        "misspelt spec field",
        monitor,
        lambda o: _rename(o["spec"], "endpoints", "endpoint"),
        "spec",
        "'endpoint' was unexpected",
    ),
    (
        "misspelt metadata field",
        monitor,
        lambda o: _rename(o["metadata"], "labels", "label"),
        "metadata",
        "'label' was unexpected",
    ),
    (
        "misspelt selector field",
        monitor,
        lambda o: _rename(o["spec"]["selector"], "matchExpressions", "matchExpression"),
        "spec.selector",
        "'matchExpression' was unexpected",
    ),
    (
        "port number instead of the port's name",
        monitor,
        lambda o: _endpoint(o).update(port=9464),
        "spec.endpoints.0.port",
        "is not of type 'string'",
    ),
    (
        "scheme in capitals",
        monitor,
        lambda o: _endpoint(o).update(scheme="HTTP"),
        "spec.endpoints.0.scheme",
        "is not one of",
    ),
    (
        "scheme that is not http(s)",
        monitor,
        lambda o: _endpoint(o).update(scheme="ftp"),
        "spec.endpoints.0.scheme",
        "is not one of",
    ),
    (
        "interval in words",
        monitor,
        lambda o: _endpoint(o).update(interval="30 seconds"),
        "spec.endpoints.0.interval",
        "does not match",
    ),
    (
        "scrape timeout without a unit",
        monitor,
        lambda o: _endpoint(o).update(scrapeTimeout="10"),
        "spec.endpoints.0.scrapeTimeout",
        "does not match",
    ),
    (
        "interval as a number",
        monitor,
        lambda o: _endpoint(o).update(interval=30),
        "spec.endpoints.0.interval",
        "is not of type 'string'",
    ),
    (
        "selector operator in lower case",
        monitor,
        lambda o: _expression(o).update(operator="in"),
        "spec.selector.matchExpressions.0.operator",
        "is not one of",
    ),
    (
        "In without values",
        monitor,
        lambda o: _expression(o).pop("values"),
        "spec.selector.matchExpressions.0",
        "'values' is a required property",
    ),
    (
        "endpoint without a port",
        monitor,
        lambda o: _endpoint(o).pop("port"),
        "spec.endpoints.0",
        "'port' is a required property",
    ),
    (
        "label value not a string",
        monitor,
        lambda o: o["metadata"]["labels"].update(replicas=3),
        "metadata.labels.replicas",
        "is not of type 'string'",
    ),
    (
        "for in words",
        rule,
        lambda o: _rule(o).update({"for": "a minute"}),
        "spec.groups.0.rules.0.for",
        "does not match",
    ),
    (
        "misspelt rule field",
        rule,
        lambda o: _rename(_rule(o), "expr", "expresion"),
        "spec.groups.0.rules.0",
        "'expresion' was unexpected",
    ),
    (
        "rule without its expression",
        rule,
        lambda o: _rule(o).pop("expr"),
        "spec.groups.0.rules.0",
        "'expr' is a required property",
    ),
    (
        "misspelt group field",
        rule,
        lambda o: _rename(o["spec"]["groups"][0], "rules", "rule"),
        "spec.groups.0",
        "'rule' was unexpected",
    ),
    (
        "group without a name",
        rule,
        lambda o: o["spec"]["groups"][0].pop("name"),
        "spec.groups.0",
        "'name' is a required property",
    ),
    (
        "severity not a string",
        rule,
        lambda o: _rule(o)["labels"].update(severity=2),
        "spec.groups.0.rules.0.labels.severity",
        "is not of type 'string'",
    ),
    (
        "annotation that is a list",
        rule,
        lambda o: _rule(o)["annotations"].update(runbook=["a", "b"]),
        "spec.groups.0.rules.0.annotations.runbook",
        "is not of type 'string'",
    ),
    (
        "recording rule, a field the schema does not use",
        rule,
        lambda o: _rule(o).update(record="agentmesh:errors:rate5m"),
        "spec.groups.0.rules.0",
        "'record' was unexpected",
    ),
    (
        "unknown top-level field",
        rule,
        lambda o: o.update(status={}),
        "(root)",
        "'status' was unexpected",
    ),
]


def test_the_schemas_are_ours_one_per_kind() -> None:
    assert sorted(p.name for p in SCHEMA_DIR.iterdir()) == [
        "prometheusrule.schema.yaml",
        "servicemonitor.schema.yaml",
    ]
    assert set(schemas()) == {
        ("monitoring.coreos.com/v1", "PrometheusRule"),
        ("monitoring.coreos.com/v1", "ServiceMonitor"),
    }


def _subschemas(schema: Any, where: str = "") -> Iterator[tuple[str, Object]]:
    if isinstance(schema, dict):
        yield where, schema
        for key, value in schema.items():
            yield from _subschemas(value, f"{where}/{key}")
    elif isinstance(schema, list):
        for index, value in enumerate(schema):
            yield from _subschemas(value, f"{where}/{index}")


def test_every_object_the_schemas_define_is_closed() -> None:
    """An object schema lists its fields and admits no other, or is a string map."""
    for key, schema in schemas().items():
        for where, sub in _subschemas(schema):
            if sub.get("type") != "object":
                continue
            if "properties" in sub:
                assert sub.get("additionalProperties") is False, (key, where)
            else:
                assert sub.get("additionalProperties") == {"type": "string"}, (key, where)


def test_the_components_objects_follow_their_schemas() -> None:
    for obj in (monitor(), rule()):
        assert is_custom(obj)
        assert problems(obj) == []


@pytest.mark.parametrize(
    ("make", "change", "path", "message"),
    [case[1:] for case in BROKEN],
    ids=[case[0] for case in BROKEN],
)
def test_a_broken_object_is_refused(
    make: Callable[[], Object], change: Callable[[Object], None], path: str, message: str
) -> None:
    obj = make()
    change(obj)
    found = problems(obj)
    assert any(line.split(": ", 2)[1] == path and message in line for line in found), found


@pytest.mark.parametrize(
    "change",
    [
        lambda o: _rule(o)["labels"].update(severity="page"),
        lambda o: _rule(o).update({"for": "1h30m"}),
        lambda o: _rule(o).update({"for": "0"}),
        lambda o: o["metadata"].update(namespace="observability"),
    ],
    ids=["free-form severity", "compound duration", "zero duration", "namespace"],
)
def test_what_the_api_allows_passes_in_a_rule(change: Callable[[Object], None]) -> None:
    obj = rule()
    change(obj)
    assert problems(obj) == []


@pytest.mark.parametrize(
    "change",
    [
        lambda o: _endpoint(o).update(scheme="https"),
        lambda o: _endpoint(o).update(interval="500ms", scrapeTimeout="250ms"),
        lambda o: o["spec"]["selector"]["matchExpressions"].append(
            {"key": "app.kubernetes.io/name", "operator": "Exists"}
        ),
    ],
    ids=["https", "milliseconds", "Exists"],
)
def test_what_the_api_allows_passes_in_a_monitor(change: Callable[[Object], None]) -> None:
    obj = monitor()
    change(obj)
    assert problems(obj) == []


def _run(tmp_path: Path, objects: list[Object]) -> subprocess.CompletedProcess[str]:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(yaml.safe_dump_all(objects), encoding="utf-8")
    return subprocess.run(
        [
            sys.executable,
            str(CHECK_SCRIPT),
            str(manifest),
            str(tmp_path / "core.yaml"),
            str(tmp_path / "rules.yaml"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_the_check_script_passes_the_component_and_sets_it_apart(tmp_path: Path) -> None:
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "gateway"}}
    result = _run(tmp_path, [monitor(), service, rule()])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 custom resources checked against deploy/schemas" in result.stdout
    assert list(yaml.safe_load_all((tmp_path / "core.yaml").read_text())) == [service]
    groups = yaml.safe_load((tmp_path / "rules.yaml").read_text())["groups"]
    assert groups == rule()["spec"]["groups"]


def test_the_check_script_fails_on_a_misspelt_field(tmp_path: Path) -> None:
    broken = monitor()
    _rename(_endpoint(broken), "interval", "intervall")
    result = _run(tmp_path, [broken, rule()])
    assert result.returncode == 1
    assert (
        "ServiceMonitor/agentmesh: spec.endpoints.0: Additional properties are not allowed"
        " ('intervall' was unexpected)"
    ) in result.stdout
