"""Domain types of the agent API: plain dataclasses, no gRPC.

Agent logic receives a :class:`Request` and returns a :class:`Result` (or, when
streaming, yields text deltas and :class:`Partial` outputs before a final
:class:`Result`). The runtime converts them to and from the wire messages in
``agentmesh/v1/messages.proto``; the shapes follow the A2A protocol's.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias, TypeVar

from agentmesh.runtime.errors import FailedPrecondition, InvalidInput
from agentmesh.runtime.schema import json_schema

JSONValue: TypeAlias = Any
"""Anything ``json.dumps`` accepts: dict, list, str, int, float, bool, None."""


@dataclass(frozen=True, slots=True)
class TextPart:
    text: str
    media_type: str = "text/plain"
    metadata: Mapping[str, JSONValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DataPart:
    """Structured JSON data (an object, usually)."""

    data: JSONValue
    media_type: str = "application/json"
    metadata: Mapping[str, JSONValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FilePart:
    """Bytes inline (``raw``) or by reference (``url``); exactly one is set."""

    raw: bytes | None = None
    url: str | None = None
    media_type: str = "application/octet-stream"
    filename: str = ""
    metadata: Mapping[str, JSONValue] = field(default_factory=dict)


Part: TypeAlias = TextPart | DataPart | FilePart


@dataclass(frozen=True, slots=True)
class Message:
    parts: tuple[Part, ...] = ()
    metadata: Mapping[str, JSONValue] = field(default_factory=dict)
    message_id: str = ""
    context_id: str = ""

    @property
    def text(self) -> str:
        """All text parts joined by blank lines ("" when there are none)."""
        return "\n\n".join(p.text for p in self.parts if isinstance(p, TextPart))

    @property
    def data(self) -> JSONValue:
        """The first data part's value, or None."""
        for part in self.parts:
            if isinstance(part, DataPart):
                return part.data
        return None


@dataclass(frozen=True, slots=True)
class Skill:
    id: str
    name: str = ""
    description: str = ""
    tags: tuple[str, ...] = ()
    examples: tuple[str, ...] = ()
    input_modes: tuple[str, ...] = ("text/plain",)
    output_modes: tuple[str, ...] = ("text/plain", "application/json")
    options: type[Any] | Mapping[str, JSONValue] | None = None
    """The options the skill takes: a pydantic model or dataclass (or a JSON Schema as is).
    With one, an option it does not name, or of the wrong type, is refused before the
    handler runs; without one, options are not checked."""
    input: type[Any] | Mapping[str, JSONValue] | None = None
    """The shape of the request's data part, if the skill takes one (documentation)."""
    output: type[Any] | Mapping[str, JSONValue] | None = None
    """The shape of the result's data part (documentation)."""

    @property
    def options_schema(self) -> dict[str, JSONValue] | None:
        return json_schema(self.options)

    @property
    def input_schema(self) -> dict[str, JSONValue] | None:
        return json_schema(self.input)

    @property
    def output_schema(self) -> dict[str, JSONValue] | None:
        return json_schema(self.output)


@dataclass(frozen=True, slots=True)
class AgentCard:
    """What an agent is and can do; served by GetCard and listed by the gateway."""

    name: str
    description: str
    skills: tuple[Skill, ...]
    version: str = "0.1.0"
    streaming: bool = True
    extensions: tuple[str, ...] = ()
    #: Reads earlier turns: the gateway adds a session's turns as a data part {"history"}.
    takes_history: bool = False

    def __post_init__(self) -> None:
        if not self.skills:
            raise ValueError(f"agent card {self.name!r} declares no skills")

    def skill(self, skill_id: str) -> Skill | None:
        return next((s for s in self.skills if s.id == skill_id), None)


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    model: str = ""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        models = {m for m in (self.model, other.model) if m}
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cost_usd + other.cost_usd,
            ",".join(sorted(models)),
        )


@dataclass(frozen=True, slots=True)
class Artifact:
    parts: tuple[Part, ...]
    name: str = "result"
    artifact_id: str = "result"
    description: str = ""
    metadata: Mapping[str, JSONValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Result:
    """The completed output of one invocation."""

    artifacts: tuple[Artifact, ...] = ()
    usage: Usage = field(default_factory=Usage)
    metadata: Mapping[str, JSONValue] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        text: str | None = None,
        data: JSONValue | None = None,
        *,
        usage: Usage | None = None,
        metadata: Mapping[str, JSONValue] | None = None,
    ) -> Result:
        """One artifact named "result" holding a text part and/or a data part."""
        parts: list[Part] = []
        if text is not None:
            parts.append(TextPart(text))
        if data is not None:
            parts.append(DataPart(data))
        return cls(
            artifacts=(Artifact(tuple(parts)),) if parts else (),
            usage=usage or Usage(),
            metadata=metadata or {},
        )

    @property
    def text(self) -> str:
        return "\n\n".join(
            p.text for a in self.artifacts for p in a.parts if isinstance(p, TextPart)
        )

    @property
    def data(self) -> JSONValue:
        for artifact in self.artifacts:
            for part in artifact.parts:
                if isinstance(part, DataPart):
                    return part.data
        return None


@dataclass(frozen=True, slots=True)
class Partial:
    """Output produced before the final result.

    With ``append`` (the default) the parts extend the artifact ``artifact_id``;
    otherwise they replace it. A streaming handler may simply yield ``str``
    deltas: each becomes a ``Partial`` with one text part.
    """

    parts: tuple[Part, ...]
    artifact_id: str = "result"
    append: bool = True


_N = TypeVar("_N", int, float)


class Mesh(Protocol):
    """The mesh as a handler reaches it (``request.mesh``): calls through the gateway
    with the request's remaining deadline, trace context and hop count.

    ``target`` is "AGENT", "AGENT/SKILL" or "skill:SKILL". A failed call
    raises :class:`~agentmesh.runtime.AgentError` with the callee's status.
    """

    async def invoke(
        self,
        target: str,
        text: str | None = None,
        *,
        skill: str = "",
        data: JSONValue | None = None,
        options: Mapping[str, JSONValue] | None = None,
        metadata: Mapping[str, JSONValue] | None = None,
    ) -> Result: ...

    def stream(
        self,
        target: str,
        text: str | None = None,
        *,
        skill: str = "",
        data: JSONValue | None = None,
        options: Mapping[str, JSONValue] | None = None,
        metadata: Mapping[str, JSONValue] | None = None,
    ) -> AsyncIterator[Partial | Result]: ...


class NoMesh:
    """``request.mesh`` of an agent that knows no gateway: every call is refused."""

    def _refuse(self) -> FailedPrecondition:
        return FailedPrecondition(
            "this agent cannot call the mesh: it knows no gateway (set AGENTMESH_GATEWAY "
            "or --gateway to the gateway's HOST:PORT)"
        )

    async def invoke(
        self,
        target: str,
        text: str | None = None,
        *,
        skill: str = "",
        data: JSONValue | None = None,
        options: Mapping[str, JSONValue] | None = None,
        metadata: Mapping[str, JSONValue] | None = None,
    ) -> Result:
        raise self._refuse()

    async def stream(
        self,
        target: str,
        text: str | None = None,
        *,
        skill: str = "",
        data: JSONValue | None = None,
        options: Mapping[str, JSONValue] | None = None,
        metadata: Mapping[str, JSONValue] | None = None,
    ) -> AsyncIterator[Partial | Result]:
        refusal = self._refuse()
        if refusal:  # always: the yield below only makes this an async generator
            raise refusal
        yield Result()


NO_MESH = NoMesh()


@dataclass(frozen=True, slots=True)
class Request:
    """One invocation as an agent sees it.

    ``skill`` is already resolved to one of the card's skills. ``deadline`` is a
    ``time.monotonic()`` instant (None: the caller set none).
    """

    skill: str
    message: Message
    options: Mapping[str, JSONValue] = field(default_factory=dict)
    deadline: float | None = None
    task_id: str = ""
    mesh: Mesh = field(default=NO_MESH, repr=False, compare=False)
    """Calls to other agents through the gateway (delegation)."""
    hops: int = 0
    """How many delegations led to this call (0: a client called)."""
    principal: str = ""
    """Who the call is for, as the gateway authenticated it ("" when no gateway said:
    see :mod:`agentmesh.runtime.principal` for what an agent may trust it for)."""

    @property
    def text(self) -> str:
        return self.message.text

    def time_remaining(self) -> float | None:
        """Seconds left before the caller's deadline, or None without one."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def require_text(self, *, max_chars: int | None = None) -> str:
        """The request's text; InvalidInput when there is none or too much."""
        text = self.message.text
        if not text.strip():
            raise InvalidInput("message.parts", "a non-empty text part is required")
        if max_chars is not None and len(text) > max_chars:
            raise InvalidInput(
                "message.parts", f"text is {len(text)} characters; the limit is {max_chars}"
            )
        return text

    def int_option(self, name: str, default: int, *, minimum: int, maximum: int) -> int:
        return self._number_option(name, default, int, minimum, maximum)

    def float_option(self, name: str, default: float, *, minimum: float, maximum: float) -> float:
        return self._number_option(name, default, float, minimum, maximum)

    def str_option(self, name: str, default: str, *, choices: Sequence[str] = ()) -> str:
        value = self.options.get(name, default)
        if not isinstance(value, str):
            raise InvalidInput(f"options.{name}", "must be a string")
        if choices and value not in choices:
            raise InvalidInput(f"options.{name}", f"must be one of: {', '.join(choices)}")
        return value

    def bool_option(self, name: str, default: bool) -> bool:
        value = self.options.get(name, default)
        if not isinstance(value, bool):
            raise InvalidInput(f"options.{name}", "must be true or false")
        return value

    def _number_option(
        self, name: str, default: _N, kind: type[_N], minimum: _N, maximum: _N
    ) -> _N:
        raw = self.options.get(name, default)
        # JSON (and protobuf's Struct) carry every number as a float: accept
        # 3.0 for an int option, but not 3.5, and never a bool.
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
            raise InvalidInput(f"options.{name}", f"must be a number from {minimum} to {maximum}")
        if kind is int and raw != int(raw):
            raise InvalidInput(f"options.{name}", "must be a whole number")
        value = kind(raw)
        if not minimum <= value <= maximum:
            raise InvalidInput(f"options.{name}", f"must be from {minimum} to {maximum}")
        return value
