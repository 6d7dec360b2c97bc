"""Multi-turn jobs: what a job's work is given when it runs again after ResumeJob.

A job's work may ask its caller a question (an agent raises
:class:`~agentmesh.runtime.errors.InputRequired`, or a workflow reaches an ``ask``
step). The job then waits in INPUT_REQUIRED, the question recorded in its
``inputs``; ResumeJob writes the answer there and queues the job again. When it runs
again:

* an invocation goes to the agent as the original request (same target, skill,
  options and message) with the conversation so far as history turns, the shape the
  gateway gives agents that take history: a data part ``{"history": [{"role":
  "assistant", "content": QUESTION}, {"role": "user", "content": ANSWER}, ...]}``,
  whose last user turn is the new input;
* a workflow runs with each answer known by the step that asked (:data:`answers`):
  that ``ask`` step's output is the answer. A workflow that asks, run outside a job,
  is refused (no one could answer).
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Mapping

from google.protobuf import struct_pb2

from agentmesh.runtime import wire
from agentmesh.runtime.types import Message
from agentmesh.v1 import gateway_pb2
from agentmesh.v1 import messages_pb2 as pb

answers: contextvars.ContextVar[Mapping[str, Message] | None] = contextvars.ContextVar(
    "agentmesh_job_answers", default=None
)
"""The answers of the job whose work runs in this context, by the step that asked; None
outside a job (a workflow that asks is then refused)."""

finished: contextvars.ContextVar[Mapping[str, gateway_pb2.StepFinished] | None] = (
    contextvars.ContextVar("agentmesh_job_finished_steps", default=None)
)
"""The steps a workflow job's earlier run finished before it waited for input, by step:
the resumed run keeps them instead of running them again."""


def answer_text(message: pb.Message) -> str:
    """An answer as one history turn: its text, else its data as JSON."""
    texts = [p.text for p in message.parts if p.WhichOneof("content") == "text"]
    if texts:
        return "\n\n".join(texts)
    data = [
        wire.value_to_python(p.data) for p in message.parts if p.WhichOneof("content") == "data"
    ]
    return json.dumps(data[0] if len(data) == 1 else data) if data else ""


def conversation(inputs: list[gateway_pb2.JobInput]) -> list[dict[str, str]]:
    """The answered questions as history turns, oldest first."""
    turns: list[dict[str, str]] = []
    for asked in inputs:
        if not asked.HasField("answer"):
            continue
        turns.append({"role": "assistant", "content": asked.question})
        turns.append({"role": "user", "content": answer_text(asked.answer)})
    return turns


def resumed_request(
    request: pb.InvokeRequest, inputs: list[gateway_pb2.JobInput]
) -> pb.InvokeRequest:
    """``request`` with the conversation so far added to its history (a copy; ``request``
    itself when nothing was answered yet)."""
    turns = conversation(inputs)
    if not turns:
        return request
    resumed = pb.InvokeRequest()
    resumed.CopyFrom(request)
    for part in resumed.message.parts:
        value = part.data if part.WhichOneof("content") == "data" else None
        if (
            value is not None
            and value.WhichOneof("kind") == "struct_value"
            and "history" in value.struct_value.fields
            and value.struct_value.fields["history"].WhichOneof("kind") == "list_value"
        ):
            # The request already carries earlier turns: the conversation goes after them.
            history = value.struct_value.fields["history"].list_value
            history.extend(turns)  # type: ignore[arg-type]
            return resumed
    data = struct_pb2.Struct()
    data.update({"history": turns})
    resumed.message.parts.add(media_type="application/json").data.struct_value.CopyFrom(data)
    return resumed


def answers_by_step(inputs: list[gateway_pb2.JobInput]) -> dict[str, Message]:
    """The answers a workflow's ``ask`` steps got, by step."""
    return {
        asked.step: wire.message_from_proto(asked.answer)
        for asked in inputs
        if asked.step and asked.HasField("answer")
    }


def finished_steps(events: list[gateway_pb2.JobEvent]) -> dict[str, gateway_pb2.StepFinished]:
    """The steps a workflow job's log shows finished, by step (the latest of each)."""
    return {
        e.workflow.step_finished.step: e.workflow.step_finished
        for e in events
        if e.HasField("workflow") and e.workflow.HasField("step_finished")
    }


__all__ = [
    "answer_text",
    "answers",
    "answers_by_step",
    "conversation",
    "finished",
    "finished_steps",
    "resumed_request",
]
