"""Client-side types and request builders for fan-out and jobs."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import grpc

from agentmesh.client._model import (
    Event,
    Reply,
    WorkflowEvent,
    build_request,
    build_workflow_request,
    event_from_proto,
    parse_target,
    reply_from_proto,
    workflow_event_from_proto,
)
from agentmesh.runtime.types import JSONValue
from agentmesh.runtime.wire import value_to_python
from agentmesh.v1 import gateway_pb2
from agentmesh.v1 import messages_pb2 as pb

Policy = Literal["all", "quorum", "first"]
Aggregation = Literal["collect", "first_success", "majority", "best_score", "merge", "reduce"]

_CODES = {code.value[0]: code for code in grpc.StatusCode}
_STATES = {value: name.removeprefix("TASK_STATE_").lower() for name, value in pb.TaskState.items()}


def status_code(value: int) -> grpc.StatusCode:
    return _CODES.get(value, grpc.StatusCode.UNKNOWN)


@dataclass(frozen=True, slots=True)
class Leg:
    """One fan-out leg: who answered, how, how fast, and what."""

    agent: str
    skill: str
    code: grpc.StatusCode
    message: str
    latency_ms: float
    reply: Reply | None


@dataclass(frozen=True, slots=True)
class FanOutResult:
    legs: tuple[Leg, ...]
    result: Reply | None  # the aggregate (None for "collect", or when it failed)
    ok: bool  # the policy was met and the aggregate formed
    detail: str
    succeeded: int
    failed: int
    raw: gateway_pb2.FanOutResponse


@dataclass(frozen=True, slots=True)
class Job:
    job_id: str
    state: str  # submitted, working, input_required, completed, failed, canceled
    kind: str  # invoke, workflow, fan_out
    description: str
    code: grpc.StatusCode
    message: str
    created_at: float
    updated_at: float
    event_count: int
    result: Reply | FanOutResult | None  # a workflow's result is in ``raw.workflow``
    raw: gateway_pb2.Job
    question: str = ""  # while input_required: what the work asks (answer with resume_job)
    question_data: JSONValue = None  # the question's data payload, when it has one

    @property
    def done(self) -> bool:
        return self.state in ("completed", "failed", "canceled")

    @property
    def waiting(self) -> bool:
        """It waits for an answer (``resume_job``) to :attr:`question`."""
        return self.state == "input_required"


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One entry of a job's log: a state change, or the work's own event."""

    offset: int
    job: Job | None  # set for state changes
    event: Event | WorkflowEvent | None  # set for the invocation's or workflow's events


def build_fan_out(
    targets: Sequence[str],
    text: str | None,
    *,
    skill: str | None,
    data: JSONValue | None,
    options: Mapping[str, Any] | None,
    policy: Policy,
    quorum: int,
    aggregation: Aggregation,
    field: str,
    aggregator: str | None,
    max_width: int,
    leg_timeout: float | None,
) -> gateway_pb2.FanOutRequest:
    """A FanOutRequest; each target is ``NAME`` or ``NAME/SKILL``."""
    base = build_request(
        None, text, agent=None, skill=skill, data=data, parts=(), options=options, metadata=None
    )
    request = gateway_pb2.FanOutRequest(
        skill=base.skill,
        policy=gateway_pb2.PartialPolicy.Value(f"PARTIAL_POLICY_{policy.upper()}"),
        quorum=quorum,
        aggregation=gateway_pb2.Aggregation.Value(f"AGGREGATION_{aggregation.upper()}"),
        field=field,
        max_width=max_width,
        leg_timeout_seconds=leg_timeout or 0.0,
    )
    request.message.CopyFrom(base.message)
    if base.HasField("options"):
        request.options.CopyFrom(base.options)
    for target in targets:
        agent, target_skill = parse_target(target)
        request.targets.add(agent=agent, skill=target_skill)
    if aggregator:
        agent, aggregator_skill = parse_target(aggregator)
        request.aggregator.agent, request.aggregator.skill = agent, aggregator_skill
    return request


def fan_out_from_proto(response: gateway_pb2.FanOutResponse) -> FanOutResult:
    legs = tuple(
        Leg(
            agent=leg.agent,
            skill=leg.skill,
            code=status_code(leg.code),
            message=leg.message,
            latency_ms=leg.latency_ms,
            reply=reply_from_proto(leg.result) if leg.HasField("result") else None,
        )
        for leg in response.legs
    )
    has_result = bool(response.result.artifacts) or bool(response.result.agent)
    return FanOutResult(
        legs=legs,
        result=reply_from_proto(response.result) if has_result else None,
        ok=response.result.state == pb.TASK_STATE_COMPLETED,
        detail=response.detail,
        succeeded=response.succeeded,
        failed=response.failed,
        raw=response,
    )


def build_invoke_job(
    target: str | None,
    text: str | None,
    *,
    data: JSONValue | None,
    options: Mapping[str, Any] | None,
    timeout: float | None,
) -> gateway_pb2.SubmitJobRequest:
    request = gateway_pb2.SubmitJobRequest(timeout_seconds=_job_timeout(timeout))
    request.invoke.CopyFrom(
        build_request(
            target,
            text,
            agent=None,
            skill=None,
            data=data,
            parts=(),
            options=options,
            metadata=None,
        )
    )
    return request


def build_workflow_job(
    workflow: str | Mapping[str, Any],
    text: str | None,
    *,
    data: JSONValue | None,
    state: Mapping[str, Any] | None,
    timeout: float | None,
) -> gateway_pb2.SubmitJobRequest:
    request = gateway_pb2.SubmitJobRequest(timeout_seconds=_job_timeout(timeout))
    request.workflow.CopyFrom(
        build_workflow_request(workflow, text, data=data, parts=(), state=state)
    )
    return request


def build_job(
    target: str | None,
    text: str | None,
    *,
    workflow: str | Mapping[str, Any] | None,
    data: JSONValue | None,
    options: Mapping[str, Any] | None,
    state: Mapping[str, Any] | None,
    timeout: float | None,
    idempotency_key: str | None,
) -> gateway_pb2.SubmitJobRequest:
    """SubmitJob's request: a call to ``target``, or a ``workflow`` run."""
    if workflow is not None:
        request = build_workflow_job(workflow, text, data=data, state=state, timeout=timeout)
    else:
        request = build_invoke_job(target, text, data=data, options=options, timeout=timeout)
    request.idempotency_key = idempotency_key or ""
    return request


def _job_timeout(timeout: float | None) -> float:
    if timeout is not None and (not math.isfinite(timeout) or timeout <= 0):
        raise ValueError("a job's timeout must be a positive number of seconds")
    return timeout or 0.0


def build_answer(text: str | None, data: JSONValue | None) -> pb.Message:
    """ResumeJob's message: the answer's text and/or data."""
    if text is None and data is None:
        raise ValueError("give the answer: text and/or data")
    base = build_request(
        None, text, agent=None, skill=None, data=data, parts=(), options=None, metadata=None
    )
    return base.message


def job_from_proto(job: gateway_pb2.Job) -> Job:
    kind = job.WhichOneof("result")
    waiting = job.state == pb.TASK_STATE_INPUT_REQUIRED and len(job.inputs) > 0
    asked = job.inputs[-1] if waiting else None
    result: Reply | FanOutResult | None = None
    if kind == "invoke":
        result = reply_from_proto(job.invoke)
    elif kind == "fan_out":
        result = fan_out_from_proto(job.fan_out)
    elif kind == "workflow":
        result = reply_from_proto(job.workflow.result)
    return Job(
        job_id=job.job_id,
        state=_STATES.get(job.state, "unspecified"),
        kind=job.kind,
        description=job.description,
        code=status_code(job.code),
        message=job.message,
        created_at=job.created_at,
        updated_at=job.updated_at,
        event_count=job.event_count,
        result=result,
        raw=job,
        question=asked.question if asked is not None else "",
        question_data=(
            value_to_python(asked.data) if asked is not None and asked.HasField("data") else None
        ),
    )


def job_event_from_proto(event: gateway_pb2.JobEvent) -> JobEvent:
    which = event.WhichOneof("event")
    if which == "state":
        return JobEvent(event.offset, job_from_proto(event.state), None)
    if which == "invoke":
        return JobEvent(event.offset, None, event_from_proto(event.invoke))
    if which == "workflow":
        return JobEvent(event.offset, None, workflow_event_from_proto(event.workflow))
    return JobEvent(event.offset, None, None)


def job_state_filter(state: str | None) -> pb.TaskState.ValueType:
    if not state:
        return pb.TASK_STATE_UNSPECIFIED
    try:
        return pb.TaskState.Value(f"TASK_STATE_{state.upper()}")
    except ValueError:
        known = ", ".join(sorted(set(_STATES.values()) - {"unspecified"}))
        raise ValueError(f"unknown job state {state!r}; one of: {known}") from None


__all__ = [
    "Aggregation",
    "FanOutResult",
    "Job",
    "JobEvent",
    "Leg",
    "Policy",
]
