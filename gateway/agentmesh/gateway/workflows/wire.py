"""Workflow events as ``agentmesh.v1`` wire messages."""

from __future__ import annotations

from agentmesh.gateway.workflows.events import (
    Event,
    Outcome,
    RunFinished,
    RunStarted,
    StepError,
    StepFinished,
    StepOutput,
    StepPartial,
    StepStarted,
)
from agentmesh.runtime import wire
from agentmesh.runtime.errors import ErrorCode
from agentmesh.runtime.status import grpc_code
from agentmesh.v1 import gateway_pb2
from agentmesh.v1 import messages_pb2 as pb

OUTCOMES = {
    Outcome.SUCCEEDED: gateway_pb2.STEP_OUTCOME_SUCCEEDED,
    Outcome.FAILED: gateway_pb2.STEP_OUTCOME_FAILED,
    Outcome.SKIPPED: gateway_pb2.STEP_OUTCOME_SKIPPED,
    Outcome.FELL_BACK: gateway_pb2.STEP_OUTCOME_FELL_BACK,
    Outcome.COMPENSATED: gateway_pb2.STEP_OUTCOME_COMPENSATED,
    Outcome.CANCELLED: gateway_pb2.STEP_OUTCOME_CANCELLED,
}


def code_number(code: ErrorCode | None) -> int:
    """The grpc.StatusCode value of ``code`` (0 for none)."""
    return 0 if code is None else int(grpc_code(code).value[0])


def output_to_proto(output: StepOutput) -> pb.InvokeResponse:
    return wire.result_to_proto(output.result, agent=output.agent, skill=output.skill)


def step_finished_to_proto(event: StepFinished) -> gateway_pb2.StepFinished:
    message = gateway_pb2.StepFinished(
        step=event.step,
        agent=event.agent,
        outcome=OUTCOMES[event.outcome],
        code=code_number(event.code),
        message=event.message,
        latency_ms=event.latency_ms,
        attempts=event.attempts,
    )
    if event.output is not None:
        message.result.CopyFrom(output_to_proto(event.output))
    return message


_FROM_OUTCOMES = {number: outcome for outcome, number in OUTCOMES.items()}
_CODES = {int(grpc_code(code).value[0]): code for code in ErrorCode}


def step_finished_from_proto(message: gateway_pb2.StepFinished) -> StepFinished:
    """A recorded step's end, back as the engine's event (to keep it in a resumed run)."""
    output = None
    if message.HasField("result"):
        result = message.result
        output = StepOutput(wire.result_from_proto(result), result.agent, result.skill)
    return StepFinished(
        message.step,
        _FROM_OUTCOMES.get(message.outcome, Outcome.FAILED),
        agent=message.agent,
        code=_CODES.get(message.code, ErrorCode.INTERNAL) if message.code else None,
        message=message.message,
        latency_ms=message.latency_ms,
        attempts=message.attempts,
        output=output,
    )


def result_to_proto(event: RunFinished) -> gateway_pb2.WorkflowResult:
    result = gateway_pb2.WorkflowResult(
        run_id=event.run_id,
        workflow=event.workflow,
        state=pb.TASK_STATE_COMPLETED,
        steps=[step_finished_to_proto(s) for s in event.steps],
        latency_ms=event.latency_ms,
    )
    if event.output is not None:
        result.result.CopyFrom(output_to_proto(event.output))
    wire.usage_to_proto(event.usage, result.usage)
    return result


def event_to_proto(event: Event) -> gateway_pb2.WorkflowEvent:
    if isinstance(event, RunStarted):
        return gateway_pb2.WorkflowEvent(
            started=gateway_pb2.WorkflowStarted(
                run_id=event.run_id, workflow=event.workflow, steps=event.steps
            )
        )
    if isinstance(event, StepStarted):
        return gateway_pb2.WorkflowEvent(
            step_started=gateway_pb2.StepStarted(
                step=event.step, agent=event.agent, skill=event.skill, attempt=event.attempt
            )
        )
    if isinstance(event, StepPartial):
        partial = wire.partial_to_proto(event.partial).partial
        return gateway_pb2.WorkflowEvent(
            step_partial=gateway_pb2.StepPartial(step=event.step, partial=partial)
        )
    if isinstance(event, StepFinished):
        return gateway_pb2.WorkflowEvent(step_finished=step_finished_to_proto(event))
    if isinstance(event, StepError):
        return gateway_pb2.WorkflowEvent(
            error=pb.ErrorEvent(
                code=code_number(event.code), message=event.message, source=event.step
            )
        )
    return gateway_pb2.WorkflowEvent(final=result_to_proto(event))
