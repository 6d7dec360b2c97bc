"""The custom resources of the manifests (the Prometheus Operator's ServiceMonitor
and PrometheusRule), checked against the CustomResourceDefinitions vendored in
deploy/schemas, strictly: a field the CRD does not declare is an error, as for
the built-in kinds under ``kubernetes-validate --strict``.

Also the script deploy/check.sh runs on each rendered overlay::

    python tests/deploy/custom_resources.py MANIFEST CORE_OUT RULES_OUT

It validates MANIFEST's custom resources (a line per problem and exit status 1
when there is any), writes every other object to CORE_OUT (for
kubernetes-validate, which knows only the built-in kinds: anything left there
that it does not know still fails) and the rule groups of every PrometheusRule
to RULES_OUT, as a Prometheus rule file for ``promtool``.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "deploy" / "schemas"

Object = dict[str, Any]


def _strict(schema: Any) -> Any:
    """``schema`` with ``additionalProperties: false`` wherever it lists properties.

    Like the API server's field validation: an object schema that declares its
    properties and neither allows extra ones nor preserves unknown fields
    admits nothing else.
    """
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {key: _strict(value) for key, value in schema.items()}
    if (
        "properties" in strict
        and "additionalProperties" not in strict
        and not strict.get("x-kubernetes-preserve-unknown-fields")
    ):
        strict["additionalProperties"] = False
    return strict


@functools.cache
def crd_schemas() -> dict[tuple[str, str], Object]:
    """``(apiVersion, kind)`` -> the strict schema of that custom resource."""
    schemas: dict[tuple[str, str], Object] = {}
    for path in sorted(SCHEMA_DIR.glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            for version in spec["versions"]:
                api_version = f"{spec['group']}/{version['name']}"
                schema = _strict(version["schema"]["openAPIV3Schema"])
                schemas[(api_version, spec["names"]["kind"])] = schema
    return schemas


def is_custom(obj: Object) -> bool:
    """Whether ``obj`` is of a kind whose CRD is vendored in deploy/schemas."""
    return (obj.get("apiVersion"), obj.get("kind")) in crd_schemas()


def problems(obj: Object) -> list[str]:
    """What is wrong with custom resource ``obj``, one line each (empty: valid)."""
    name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name', '?')}"
    schema = crd_schemas()[(obj["apiVersion"], obj["kind"])]
    found = [
        f"{name}: {'.'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}"
        for error in jsonschema.Draft7Validator(schema).iter_errors(obj)
    ]
    metadata = obj.get("metadata") or {}
    if not isinstance(metadata.get("name"), str) or not metadata["name"]:
        found.append(f"{name}: metadata.name is missing")
    for field in ("labels", "annotations"):
        values = metadata.get(field) or {}
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in values.items()):
            found.append(f"{name}: metadata.{field} must map strings to strings")
    return found


def rule_groups(objects: Iterable[Object]) -> list[Object]:
    """The rule groups of every PrometheusRule among ``objects``, in order."""
    return [
        group
        for obj in objects
        if obj.get("kind") == "PrometheusRule"
        for group in obj["spec"].get("groups", [])
    ]


def main(argv: Sequence[str]) -> int:
    if len(argv) != 3:
        print("usage: custom_resources.py MANIFEST CORE_OUT RULES_OUT", file=sys.stderr)
        return 2
    manifest, core_out, rules_out = (Path(a) for a in argv)
    objects = [o for o in yaml.safe_load_all(manifest.read_text(encoding="utf-8")) if o]
    custom = [o for o in objects if is_custom(o)]
    found = [line for obj in custom for line in problems(obj)]
    for line in found:
        print(line)
    core_out.write_text(yaml.safe_dump_all([o for o in objects if not is_custom(o)]))
    rules_out.write_text(yaml.safe_dump({"groups": rule_groups(custom)}, sort_keys=False))
    print(f"   {len(custom)} custom resources checked against deploy/schemas")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
