"""Structured (JSON) output: finding JSON in model replies and validating it."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from agentmesh.llm._errors import StructuredOutputError
from agentmesh.llm._types import ChatRequest, ChatResponse, Message
from agentmesh.runtime.resilience import Deadline

ModelT = TypeVar("ModelT", bound=BaseModel)

_TAGGED = re.compile(r"<json>(.*?)</json>", re.DOTALL | re.IGNORECASE)
_FENCED = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\r?\n(.*?)```", re.DOTALL)
_OPENERS = re.compile(r"[\[{]")
_FENCE_LANGUAGES = frozenset({"", "json", "jsonc", "json5"})
#: Bound on the positions tried when scanning prose for an object or array.
_MAX_SCAN_STARTS = 1000
_NO_JSON = "the reply contains no JSON object or array"


class JSONExtractionError(ValueError):
    """No JSON value could be found in the text."""


def iter_json(text: str) -> Iterator[Any]:
    """Every JSON value found in ``text``, most explicit first.

    In order: the contents of ``<json>...</json>`` tags, of fenced code blocks
    marked json (or unmarked), the whole text, then each object or array
    that starts somewhere in the text (leading and trailing prose tolerated).
    """
    decoder = json.JSONDecoder()
    explicit = [m.group(1) for m in _TAGGED.finditer(text)]
    explicit += [
        m.group(2) for m in _FENCED.finditer(text) if m.group(1).lower() in _FENCE_LANGUAGES
    ]
    for candidate in (*explicit, text):
        try:
            yield json.loads(candidate)
        except ValueError:
            continue
    for count, match in enumerate(_OPENERS.finditer(text)):
        if count >= _MAX_SCAN_STARTS:
            return
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        yield value


def extract_json(text: str) -> Any:
    """The first JSON value in ``text`` (see :func:`iter_json` for the search order).

    Raises :class:`JSONExtractionError` when there is none.
    """
    for value in iter_json(text):
        return value
    raise JSONExtractionError(_NO_JSON)


class SupportsComplete(Protocol):
    """Anything with ``complete``: an :class:`LLMClient` or a single provider."""

    async def complete(self, req: ChatRequest, *, timeout: float | None = None) -> ChatResponse: ...


def _problems(error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors(include_input=False, include_url=False):
        location = ".".join(str(part) for part in item["loc"]) or "(root)"
        problems.append(f"{location}: {item['msg']}")
    return problems


def _parse(text: str, schema: type[ModelT]) -> ModelT | list[str]:
    """The first JSON value in ``text`` that validates, else the first one's problems."""
    first_problems: list[str] | None = None
    for value in iter_json(text):
        try:
            return schema.model_validate(value)
        except ValidationError as exc:
            if first_problems is None:
                first_problems = _problems(exc)
    return first_problems if first_problems is not None else [_NO_JSON]


def _with_schema(req: ChatRequest, schema: type[BaseModel]) -> ChatRequest:
    instruction = Message.system(
        "Reply with one JSON object, and nothing else, that validates against this "
        f"JSON Schema:\n{json.dumps(schema.model_json_schema(), separators=(',', ':'))}"
    )
    leading = 0
    while leading < len(req.messages) and req.messages[leading].role == "system":
        leading += 1
    messages = (*req.messages[:leading], instruction, *req.messages[leading:])
    return req.model_copy(update={"messages": messages, "json_mode": True})


async def complete_json(
    client: SupportsComplete,
    req: ChatRequest,
    schema: type[ModelT],
    *,
    timeout: float | None = None,
    deadline: float | None = None,
    include_schema: bool = True,
) -> tuple[ModelT, ChatResponse]:
    """Ask for JSON, validate it against ``schema``, repair once if needed.

    The request is sent in JSON mode, with the schema's JSON Schema added as a
    system message unless ``include_schema`` is false. When the reply holds
    no JSON value that validates, one follow-up request quotes the reply and
    the validation problems and asks for corrected JSON. If that also fails,
    :class:`StructuredOutputError` names the schema and what failed.

    Returns the validated instance and the last response, whose ``usage`` and
    ``attempts`` cover both requests when a repair was needed. ``timeout`` and
    ``deadline`` bound both requests together.
    """
    bound = Deadline.start(timeout=timeout, deadline=deadline)
    request = (
        _with_schema(req, schema) if include_schema else req.model_copy(update={"json_mode": True})
    )
    first = await client.complete(request, timeout=bound.remaining())
    parsed = _parse(first.text, schema)
    if not isinstance(parsed, list):
        return parsed, first

    repair = request.with_messages(
        Message.assistant(first.text),
        Message.user(
            "Your previous reply could not be used: "
            + "; ".join(parsed)
            + ". Reply again with only the corrected JSON."
        ),
    )
    second = await client.complete(repair, timeout=bound.remaining())
    combined = dataclasses.replace(
        second,
        usage=first.usage + second.usage,
        attempts=first.attempts + second.attempts,
    )
    reparsed = _parse(second.text, schema)
    if isinstance(reparsed, list):
        raise StructuredOutputError(schema.__name__, reparsed, text=second.text)
    return reparsed, combined
