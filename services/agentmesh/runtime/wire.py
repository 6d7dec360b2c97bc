"""Conversion between the domain types and the ``agentmesh.v1`` wire messages.

The only place that knows both sides. JSON numbers travel as doubles inside
protobuf's Struct/Value; integral values within the exactly-representable
range come back as ``int``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format, struct_pb2

from agentmesh.runtime.errors import InvalidInput
from agentmesh.runtime.types import (
    AgentCard,
    Artifact,
    DataPart,
    FilePart,
    JSONValue,
    Message,
    Part,
    Partial,
    Request,
    Result,
    Skill,
    TextPart,
    Usage,
)
from agentmesh.v1 import messages_pb2 as pb

_EXACT_FLOAT_INT = 2**53


def _normalize(value: Any) -> JSONValue:
    if isinstance(value, float) and value.is_integer() and abs(value) < _EXACT_FLOAT_INT:
        return int(value)
    if isinstance(value, dict):
        return {k: _normalize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalize(v) for v in value]
    return value


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, JSONValue]:
    if not struct.fields:
        return {}
    result: dict[str, JSONValue] = _normalize(json_format.MessageToDict(struct))
    return result


def dict_to_struct(values: Mapping[str, JSONValue], target: struct_pb2.Struct) -> None:
    if values:
        target.update(_normalize(dict(values)))


def value_to_python(value: struct_pb2.Value) -> JSONValue:
    return _normalize(json_format.MessageToDict(value))


def python_to_value(data: JSONValue, target: struct_pb2.Value) -> None:
    try:
        json_format.ParseDict(data, target)
    except (json_format.ParseError, TypeError, ValueError) as exc:
        raise TypeError(f"data part is not JSON-serializable: {exc}") from None


# --- parts and messages -------------------------------------------------------


def part_from_proto(part: pb.Part, field: str) -> Part:
    kind = part.WhichOneof("content")
    metadata = struct_to_dict(part.metadata)
    if kind == "text":
        return TextPart(part.text, part.media_type or "text/plain", metadata)
    if kind == "data":
        return DataPart(value_to_python(part.data), part.media_type or "application/json", metadata)
    if kind == "raw":
        media = part.media_type or "application/octet-stream"
        return FilePart(raw=part.raw, media_type=media, filename=part.filename, metadata=metadata)
    if kind == "url":
        media = part.media_type or "application/octet-stream"
        return FilePart(url=part.url, media_type=media, filename=part.filename, metadata=metadata)
    raise InvalidInput(field, "part has no content: set one of text, data, raw, url")


def part_to_proto(part: Part, target: pb.Part) -> None:
    if isinstance(part, TextPart):
        target.text = part.text
        if part.media_type != "text/plain":
            target.media_type = part.media_type
    elif isinstance(part, DataPart):
        python_to_value(part.data, target.data)
        if part.media_type != "application/json":
            target.media_type = part.media_type
    else:
        if part.raw is not None:
            target.raw = part.raw
        elif part.url is not None:
            target.url = part.url
        target.media_type = part.media_type
        target.filename = part.filename
    dict_to_struct(part.metadata, target.metadata)


def message_from_proto(message: pb.Message, *, max_parts: int | None = None) -> Message:
    if max_parts is not None and len(message.parts) > max_parts:
        raise InvalidInput(
            "message.parts", f"{len(message.parts)} parts given; the limit is {max_parts}"
        )
    return Message(
        parts=tuple(part_from_proto(p, f"message.parts[{i}]") for i, p in enumerate(message.parts)),
        metadata=struct_to_dict(message.metadata),
        message_id=message.message_id,
        context_id=message.context_id,
    )


def message_to_proto(message: Message, target: pb.Message) -> None:
    for part in message.parts:
        part_to_proto(part, target.parts.add())
    dict_to_struct(message.metadata, target.metadata)
    target.message_id = message.message_id
    target.context_id = message.context_id
    target.role = pb.ROLE_USER


# --- requests and results -----------------------------------------------------


def request_from_proto(
    request: pb.InvokeRequest, *, time_remaining: float | None, max_parts: int | None = None
) -> Request:
    deadline = None if time_remaining is None else time.monotonic() + time_remaining
    return Request(
        skill=request.skill,
        message=message_from_proto(request.message, max_parts=max_parts),
        options=struct_to_dict(request.options),
        deadline=deadline,
        task_id=request.message.task_id,
    )


def artifact_to_proto(artifact: Artifact, target: pb.Artifact) -> None:
    target.artifact_id = artifact.artifact_id
    target.name = artifact.name
    target.description = artifact.description
    for part in artifact.parts:
        part_to_proto(part, target.parts.add())
    dict_to_struct(artifact.metadata, target.metadata)


def artifact_from_proto(artifact: pb.Artifact) -> Artifact:
    return Artifact(
        parts=tuple(
            part_from_proto(p, f"artifacts[{artifact.artifact_id}].parts[{i}]")
            for i, p in enumerate(artifact.parts)
        ),
        name=artifact.name,
        artifact_id=artifact.artifact_id,
        description=artifact.description,
        metadata=struct_to_dict(artifact.metadata),
    )


def usage_to_proto(usage: Usage, target: pb.Usage) -> None:
    target.prompt_tokens = usage.prompt_tokens
    target.completion_tokens = usage.completion_tokens
    target.total_tokens = usage.total_tokens
    target.cost_usd = usage.cost_usd
    target.model = usage.model


def usage_from_proto(usage: pb.Usage) -> Usage:
    return Usage(usage.prompt_tokens, usage.completion_tokens, usage.cost_usd, usage.model)


def result_to_proto(
    result: Result, *, agent: str, skill: str, task_id: str = ""
) -> pb.InvokeResponse:
    response = pb.InvokeResponse(
        task_id=task_id, agent=agent, skill=skill, state=pb.TASK_STATE_COMPLETED
    )
    for artifact in result.artifacts:
        artifact_to_proto(artifact, response.artifacts.add())
    usage_to_proto(result.usage, response.usage)
    dict_to_struct(result.metadata, response.metadata)
    return response


def result_from_proto(response: pb.InvokeResponse) -> Result:
    return Result(
        artifacts=tuple(artifact_from_proto(a) for a in response.artifacts),
        usage=usage_from_proto(response.usage),
        metadata=struct_to_dict(response.metadata),
    )


def partial_to_proto(partial: Partial) -> pb.InvokeEvent:
    event = pb.InvokeEvent()
    event.partial.artifact_id = partial.artifact_id
    event.partial.append = partial.append
    for part in partial.parts:
        part_to_proto(part, event.partial.parts.add())
    return event


def partial_from_proto(partial: pb.PartialOutput) -> Partial:
    return Partial(
        parts=tuple(part_from_proto(p, "partial.parts") for p in partial.parts),
        artifact_id=partial.artifact_id,
        append=partial.append,
    )


# --- cards --------------------------------------------------------------------


def card_to_proto(card: AgentCard) -> pb.AgentCard:
    message = pb.AgentCard(
        name=card.name,
        version=card.version,
        description=card.description,
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain", "application/json"],
    )
    message.capabilities.streaming = card.streaming
    message.capabilities.extensions.extend(card.extensions)
    message.capabilities.takes_history = card.takes_history
    for skill in card.skills:
        added = message.skills.add(
            id=skill.id,
            name=skill.name or skill.id,
            description=skill.description,
            tags=skill.tags,
            examples=skill.examples,
            input_modes=skill.input_modes,
            output_modes=skill.output_modes,
        )
        for schema, target in (
            (skill.options_schema, added.options_schema),
            (skill.input_schema, added.input_schema),
            (skill.output_schema, added.output_schema),
        ):
            if schema is not None:
                target.SetInParent()  # set even when empty: "declared, takes nothing"
                dict_to_struct(schema, target)
    return message


def schema_from_proto(skill: pb.AgentSkill, field: str) -> dict[str, JSONValue] | None:
    """A skill's ``options_schema``/``input_schema``/``output_schema``; None when unset."""
    if not skill.HasField(field):  # type: ignore[arg-type]
        return None
    return struct_to_dict(getattr(skill, field))


def card_from_proto(card: pb.AgentCard) -> AgentCard:
    return AgentCard(
        name=card.name,
        version=card.version,
        description=card.description,
        skills=tuple(
            Skill(
                id=s.id,
                name=s.name,
                description=s.description,
                tags=tuple(s.tags),
                examples=tuple(s.examples),
                input_modes=tuple(s.input_modes),
                output_modes=tuple(s.output_modes),
                options=schema_from_proto(s, "options_schema"),
                input=schema_from_proto(s, "input_schema"),
                output=schema_from_proto(s, "output_schema"),
            )
            for s in card.skills
        ),
        streaming=card.capabilities.streaming,
        extensions=tuple(card.capabilities.extensions),
        takes_history=card.capabilities.takes_history,
    )
