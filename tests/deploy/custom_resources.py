"""The custom resources of the manifests (the Prometheus Operator's ServiceMonitor
and PrometheusRule), checked against the project's JSON Schemas in
deploy/schemas (``*.schema.yaml``, one per kind). Each describes only the part
of the kind's API that the monitoring component uses and admits no other
field, so a misspelt or unknown field is an error, as for the built-in kinds
under ``kubernetes-validate --strict``.

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
SCHEMA_GLOB = "*.schema.yaml"

Object = dict[str, Any]


@functools.cache
def schemas() -> dict[tuple[str, str], Object]:
    """``(apiVersion, kind)`` -> the schema of that custom resource.

    Each file names its kind with ``const`` on ``apiVersion`` and ``kind``;
    a file that is not a valid JSON Schema (2020-12) raises.
    """
    found: dict[tuple[str, str], Object] = {}
    for path in sorted(SCHEMA_DIR.glob(SCHEMA_GLOB)):
        schema: Object = yaml.safe_load(path.read_text(encoding="utf-8"))
        jsonschema.Draft202012Validator.check_schema(schema)
        key = (schema["properties"]["apiVersion"]["const"], schema["properties"]["kind"]["const"])
        if key in found:
            raise ValueError(f"{path}: a second schema for {key[1]} ({key[0]})")
        found[key] = schema
    return found


def is_custom(obj: Object) -> bool:
    """Whether ``obj`` is of a kind that has a schema in deploy/schemas."""
    return (obj.get("apiVersion"), obj.get("kind")) in schemas()


def problems(obj: Object) -> list[str]:
    """What is wrong with custom resource ``obj``, one line each (empty: valid)."""
    name = f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name', '?')}"
    validator = jsonschema.Draft202012Validator(schemas()[(obj["apiVersion"], obj["kind"])])
    return [
        f"{name}: {'.'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}"
        for error in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.path)))
    ]


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
