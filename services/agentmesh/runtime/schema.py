"""Skill schemas: what a skill's options (and data) look like, as JSON Schema.

An author declares a typed model on the skill (a pydantic model or a
dataclass) and never writes schema by hand::

    class SummarizeOptions(BaseModel):
        sentences: int = Field(3, ge=1, le=50, description="sentences to keep")

    Skill(id="summarize", options=SummarizeOptions)

:func:`json_schema` derives the schema; it travels on the agent's card, so
the gateway, its workflow validator and A2A clients see it too.
:func:`check_options` checks options against a schema (the agent before its
handler runs; the gateway for the literal options of a workflow or fan-out
before any call), the same way on both sides: an option the schema does not
name, or one of the wrong type or out of its range, is
:class:`~agentmesh.runtime.errors.InvalidInput` naming it. The handler still
reads its options (``request.int_option`` and friends); the check only makes
sure nothing the caller sent is silently ignored.
"""

from __future__ import annotations

import difflib
import functools
import math
from collections.abc import Callable, Hashable, Mapping
from typing import Any, cast

from pydantic import TypeAdapter

from agentmesh.runtime.errors import InvalidInput

Schema = Mapping[str, Any]

_TYPE_WORDS = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "boolean": "a boolean (true or false)",
    "array": "an array",
    "object": "an object",
    "null": "null",
}


@functools.lru_cache(maxsize=256)
def _derived(model: Hashable) -> dict[str, Any]:
    schema: dict[str, Any] = TypeAdapter(cast("Any", model)).json_schema()
    return schema


def json_schema(model: type[Any] | Schema | None) -> dict[str, Any] | None:
    """The JSON Schema of ``model`` (a pydantic model or dataclass), or of a schema as is."""
    if model is None:
        return None
    if isinstance(model, Mapping):
        return dict(model)
    return dict(_derived(cast("Hashable", model)))


def _resolve(schema: Schema, root: Schema) -> Schema:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = root.get("$defs", {}).get(ref.removeprefix("#/$defs/"))
        if isinstance(target, Mapping):
            return target
    return schema


def _types(schema: Schema, root: Schema) -> list[Schema]:
    """The alternatives of a property's schema (``anyOf``/``oneOf`` flattened)."""
    schema = _resolve(schema, root)
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list):
            return [s for o in options if isinstance(o, Mapping) for s in _types(o, root)]
    return [schema]


def _is_type(value: Any, kind: str) -> bool:
    if kind == "integer":
        return (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(value)
            and value == int(value)
        )
    if kind == "number":
        return (
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        )
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "array":
        return isinstance(value, list | tuple)
    if kind == "object":
        return isinstance(value, Mapping)
    if kind == "null":
        return value is None
    return True


def _problem(value: Any, schema: Schema) -> str | None:
    """Why ``value`` does not fit one alternative of a property's schema, or None."""
    if "const" in schema and value != schema["const"]:
        return f"must be {schema['const']!r}"
    enum = schema.get("enum")
    if isinstance(enum, list) and value not in enum:
        return "must be one of: " + ", ".join(str(e) for e in enum)
    kind = schema.get("type")
    kinds = [kind] if isinstance(kind, str) else list(kind) if isinstance(kind, list) else []
    if kinds and not any(_is_type(value, k) for k in kinds):
        return "must be " + " or ".join(_TYPE_WORDS.get(k, k) for k in kinds)
    if isinstance(value, int | float) and not isinstance(value, bool):
        low, high = schema.get("minimum"), schema.get("maximum")
        ex_low, ex_high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
        if (low is not None and value < low) or (high is not None and value > high):
            if low is not None and high is not None:
                return f"must be from {low} to {high}"
            return f"must be at least {low}" if low is not None else f"must be at most {high}"
        if ex_low is not None and value <= ex_low:
            return f"must be more than {ex_low}"
        if ex_high is not None and value >= ex_high:
            return f"must be less than {ex_high}"
    if isinstance(value, str):
        longest = schema.get("maxLength")
        if isinstance(longest, int) and len(value) > longest:
            return f"must be at most {longest} characters"
    return None


def describe(schema: Schema) -> str:
    """One line naming the options of a schema and their types: ``sentences (integer 1-50)``."""
    properties = schema.get("properties")
    if not isinstance(properties, Mapping) or not properties:
        return "none"
    shown = []
    for name, prop in properties.items():
        kinds = [
            str(s.get("type"))
            for s in _types(prop, schema)
            if isinstance(s, Mapping) and s.get("type") not in (None, "null")
        ]
        shown.append(f"{name} ({' or '.join(kinds)})" if kinds else str(name))
    return ", ".join(shown)


def check_options(
    schema: Schema | None,
    options: Mapping[str, Any],
    *,
    field: str = "options",
    owner: str = "",
    literal: Callable[[Any], bool] | None = None,
) -> None:
    """Check ``options`` against the options ``schema`` of a skill; InvalidInput otherwise.

    Without a schema nothing is checked (the skill declared none). A schema
    is closed unless it says ``additionalProperties``: every option must be
    one it names. ``literal`` (the gateway's workflow check) says which
    values are known before the call; the others are checked only by name.
    ``owner`` ("skill 'summarize' of agent 'summarizer'") goes in the message.
    """
    if schema is None:
        return
    properties = schema.get("properties")
    known: Mapping[str, Any] = properties if isinstance(properties, Mapping) else {}
    closed = not schema.get("additionalProperties", False)
    who = owner or "the skill"
    for name in options:
        if name in known or not closed:
            continue
        if not known:
            raise InvalidInput(f"{field}.{name}", f"unknown option; {who} takes no options")
        near = difflib.get_close_matches(str(name), [str(k) for k in known], n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise InvalidInput(
            f"{field}.{name}",
            f"unknown option{hint}; {who} takes: {', '.join(sorted(known))}",
        )
    for name, value in options.items():
        prop = known.get(name)
        if not isinstance(prop, Mapping) or (literal is not None and not literal(value)):
            continue
        problems = [_problem(value, alt) for alt in _types(prop, schema)]
        if problems and all(p is not None for p in problems):
            # ``int | None`` is "an integer" to a caller: null is what leaving it out means.
            shown = [p for p in problems if p != "must be null"] or problems
            raise InvalidInput(f"{field}.{name}", " or ".join(dict.fromkeys(map(str, shown))))
    required = schema.get("required")
    if isinstance(required, list):
        missing = [r for r in required if r not in options]
        if missing:
            raise InvalidInput(f"{field}.{missing[0]}", f"required option of {who} is missing")
