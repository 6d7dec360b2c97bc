"""What the client returns: replies, agent listings, stream events, errors.

Shared by the async and sync clients; no I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import grpc
from google.protobuf import struct_pb2

from agentmesh.runtime import wire
from agentmesh.runtime.status import details_of
from agentmesh.runtime.types import AgentCard, Artifact, JSONValue, Part, Partial, Result, Usage
from agentmesh.v1 import gateway_pb2
from agentmesh.v1 import messages_pb2 as pb

DEFAULT_GATEWAY = "127.0.0.1:50051"


class CallError(Exception):
    """A call failed; ``code`` is the gRPC status, ``message`` says why.

    From the status's rich details (``google.rpc.Status``): ``reason`` is the
    stable ErrorInfo reason (``AGENT_NOT_FOUND``, ``RATE_LIMITED``, ...; empty
    when the server sent none) and ``metadata`` its metadata; ``field_violations``
    the bad request fields as ``(field, description)`` pairs; ``retry_after`` the
    seconds to wait before retrying, when the server said.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
        field_violations: Sequence[tuple[str, str]] = (),
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata: Mapping[str, str] = dict(metadata or {})
        self.field_violations: tuple[tuple[str, str], ...] = tuple(field_violations)
        self.retry_after = retry_after

    @classmethod
    def from_rpc(cls, exc: grpc.RpcError) -> CallError:
        code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
        details = exc.details() if hasattr(exc, "details") else str(exc)
        rich = details_of(exc)
        return cls(
            code,
            details or "",
            reason=rich.reason,
            metadata=rich.metadata,
            field_violations=[(v.field, v.description) for v in rich.violations],
            retry_after=rich.retry_after,
        )

    def describe(self) -> list[str]:
        """The error for a person: the status and message, then one line per detail."""
        lines = [f"{self.code.name}: {self.message}"]
        if self.reason:
            lines.append(f"  reason: {self.reason}")
        lines += [f"  field {field}: {description}" for field, description in self.field_violations]
        if self.retry_after is not None:
            lines.append(f"  retry after: {self.retry_after:.3f}s")
        return lines


@dataclass(frozen=True, slots=True)
class Reply:
    """An agent's completed answer."""

    agent: str
    skill: str
    task_id: str
    artifacts: tuple[Artifact, ...]
    usage: Usage
    metadata: Mapping[str, JSONValue]
    raw: pb.InvokeResponse = field(repr=False, compare=False)

    @property
    def text(self) -> str:
        return Result(self.artifacts).text

    @property
    def data(self) -> JSONValue:
        return Result(self.artifacts).data


@dataclass(frozen=True, slots=True)
class AgentInfo:
    name: str
    status: str  # "serving", "unavailable" or "unknown"
    addresses: tuple[str, ...]
    card: AgentCard | None
    detail: str = ""
    protocol: str = "agentmesh"  # or "a2a/grpc", "a2a/jsonrpc": an external A2A agent


@dataclass(frozen=True, slots=True)
class Started:
    agent: str
    skill: str
    task_id: str


@dataclass(frozen=True, slots=True)
class Final:
    reply: Reply


@dataclass(frozen=True, slots=True)
class StreamError:
    """A non-fatal error reported inside a stream that goes on."""

    code: grpc.StatusCode
    message: str
    source: str


@dataclass(frozen=True, slots=True)
class Progress:
    """A step of a composite target (``workflow:NAME``) started or finished."""

    step: str
    agent: str
    status: str  # "started", "succeeded", "failed", "skipped" or "fell_back"
    message: str = ""
    attempt: int = 0


Event: TypeAlias = Started | Partial | Final | StreamError | Progress


def parse_target(target: str) -> tuple[str, str]:
    """``"NAME"``, ``"NAME/SKILL"``, ``"skill:SKILL"`` or ``"workflow:NAME"`` as (agent, skill).

    A workflow target travels whole in the agent field; the gateway reads it.
    """
    if target.startswith("skill:"):
        return "", target.removeprefix("skill:")
    if target.startswith("workflow:"):
        return target, ""
    agent, _, skill = target.partition("/")
    return agent, skill


def build_request(
    target: str | None,
    text: str | None,
    *,
    agent: str | None,
    skill: str | None,
    data: JSONValue | None,
    parts: Sequence[Part],
    options: Mapping[str, Any] | None,
    metadata: Mapping[str, Any] | None,
    context_id: str | None = None,
) -> pb.InvokeRequest:
    routed_agent, routed_skill = parse_target(target) if target else ("", "")
    request = pb.InvokeRequest(agent=agent or routed_agent, skill=skill or routed_skill)
    message = request.message
    message.role = pb.ROLE_USER
    if context_id:
        message.context_id = context_id
    if text is not None:
        message.parts.add(text=text)
    if data is not None:
        wire.python_to_value(data, message.parts.add().data)
    for part in parts:
        wire.part_to_proto(part, message.parts.add())
    if metadata:
        wire.dict_to_struct(metadata, message.metadata)
    if options:
        struct = struct_pb2.Struct()
        wire.dict_to_struct(options, struct)
        request.options.CopyFrom(struct)
    return request


def reply_from_proto(response: pb.InvokeResponse) -> Reply:
    result = wire.result_from_proto(response)
    return Reply(
        agent=response.agent,
        skill=response.skill,
        task_id=response.task_id,
        artifacts=result.artifacts,
        usage=result.usage,
        metadata=result.metadata,
        raw=response,
    )


def event_from_proto(event: pb.InvokeEvent) -> Event:
    kind = event.WhichOneof("event")
    if kind == "started":
        s = event.started
        return Started(agent=s.agent, skill=s.skill, task_id=s.task_id)
    if kind == "partial":
        return wire.partial_from_proto(event.partial)
    if kind == "final":
        return Final(reply_from_proto(event.final))
    if kind == "error":
        e = event.error
        return StreamError(_status(e.code), e.message, e.source)
    if kind == "progress":
        p = event.progress
        return Progress(p.step, p.agent, p.status, p.message, p.attempt)
    raise CallError(grpc.StatusCode.INTERNAL, f"unknown stream event {kind!r}")


def _status(code: int) -> grpc.StatusCode:
    return next((s for s in grpc.StatusCode if s.value[0] == code), grpc.StatusCode.UNKNOWN)


_STATUS_NAMES = {
    gateway_pb2.AGENT_STATUS_SERVING: "serving",
    gateway_pb2.AGENT_STATUS_UNAVAILABLE: "unavailable",
}


def agents_from_proto(response: gateway_pb2.ListAgentsResponse) -> list[AgentInfo]:
    return [
        AgentInfo(
            name=a.name,
            status=_STATUS_NAMES.get(a.status, "unknown"),
            addresses=tuple(a.addresses),
            card=wire.card_from_proto(a.card) if a.HasField("card") and a.card.skills else None,
            detail=a.detail,
            protocol=a.protocol or "agentmesh",
        )
        for a in response.agents
    ]


# -- workflows ---------------------------------------------------------------------

_OUTCOME_NAMES = {
    gateway_pb2.STEP_OUTCOME_SUCCEEDED: "succeeded",
    gateway_pb2.STEP_OUTCOME_FAILED: "failed",
    gateway_pb2.STEP_OUTCOME_SKIPPED: "skipped",
    gateway_pb2.STEP_OUTCOME_FELL_BACK: "fell_back",
    gateway_pb2.STEP_OUTCOME_COMPENSATED: "compensated",
    gateway_pb2.STEP_OUTCOME_CANCELLED: "cancelled",
}


@dataclass(frozen=True, slots=True)
class WorkflowStarted:
    run_id: str
    workflow: str
    steps: tuple[str, ...]  # every step id, in declaration order
    raw: gateway_pb2.WorkflowEvent = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class StepStarted:
    step: str  # "outer/inner" inside a nested workflow
    agent: str
    skill: str
    attempt: int
    raw: gateway_pb2.WorkflowEvent = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class StepPartial:
    step: str
    partial: Partial
    raw: gateway_pb2.WorkflowEvent = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class StepFinished:
    step: str
    agent: str
    outcome: str  # succeeded, failed, skipped, fell_back, compensated or cancelled
    code: grpc.StatusCode
    message: str
    latency_ms: float
    attempts: int
    reply: Reply | None
    raw: gateway_pb2.WorkflowEvent = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class StepError:
    """A step failure the run recovered from (retried, fell back, skipped...)."""

    step: str
    code: grpc.StatusCode
    message: str
    raw: gateway_pb2.WorkflowEvent = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class WorkflowFinished:
    """The workflow's result: its output, usage summed over steps, every finished step."""

    run_id: str
    workflow: str
    reply: Reply | None
    usage: Usage
    steps: tuple[StepFinished, ...]
    latency_ms: float
    raw: gateway_pb2.WorkflowEvent = field(repr=False, compare=False)

    @property
    def text(self) -> str:
        return self.reply.text if self.reply else ""

    @property
    def data(self) -> JSONValue:
        return self.reply.data if self.reply else None


WorkflowEvent: TypeAlias = (
    WorkflowStarted | StepStarted | StepPartial | StepFinished | StepError | WorkflowFinished
)


def build_workflow_request(
    workflow: str | Mapping[str, Any],
    text: str | None,
    *,
    data: JSONValue | None,
    parts: Sequence[Part],
    state: Mapping[str, Any] | None,
) -> gateway_pb2.RunWorkflowRequest:
    """A declared workflow's name, or a definition (the YAML structure), with its input."""
    request = gateway_pb2.RunWorkflowRequest()
    if isinstance(workflow, str):
        request.workflow = workflow
    else:
        wire.dict_to_struct(workflow, request.definition)
    message = build_request(
        None, text, agent=None, skill=None, data=data, parts=parts, options=None, metadata=None
    ).message
    request.input.CopyFrom(message)
    if state:
        wire.dict_to_struct(state, request.state)
    return request


def _step_finished(
    message: gateway_pb2.StepFinished, raw: gateway_pb2.WorkflowEvent
) -> StepFinished:
    return StepFinished(
        step=message.step,
        agent=message.agent,
        outcome=_OUTCOME_NAMES.get(message.outcome, "unknown"),
        code=_status(message.code),
        message=message.message,
        latency_ms=message.latency_ms,
        attempts=message.attempts,
        reply=reply_from_proto(message.result) if message.HasField("result") else None,
        raw=raw,
    )


def workflow_event_from_proto(event: gateway_pb2.WorkflowEvent) -> WorkflowEvent:
    kind = event.WhichOneof("event")
    if kind == "started":
        s = event.started
        return WorkflowStarted(s.run_id, s.workflow, tuple(s.steps), event)
    if kind == "step_started":
        t = event.step_started
        return StepStarted(t.step, t.agent, t.skill, t.attempt, event)
    if kind == "step_partial":
        p = event.step_partial
        return StepPartial(p.step, wire.partial_from_proto(p.partial), event)
    if kind == "step_finished":
        return _step_finished(event.step_finished, event)
    if kind == "error":
        e = event.error
        return StepError(e.source, _status(e.code), e.message, event)
    if kind == "final":
        f = event.final
        return WorkflowFinished(
            run_id=f.run_id,
            workflow=f.workflow,
            reply=reply_from_proto(f.result) if f.HasField("result") else None,
            usage=wire.usage_from_proto(f.usage),
            steps=tuple(_step_finished(s, event) for s in f.steps),
            latency_ms=f.latency_ms,
            raw=event,
        )
    raise CallError(grpc.StatusCode.INTERNAL, f"unknown workflow event {kind!r}")
