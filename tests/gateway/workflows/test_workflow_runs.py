"""Workflows run by a real gateway against real agents on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest
from meshtest import ProbeAgent, running_mesh

from agentmesh.client import (
    AsyncClient,
    CallError,
    StepError,
    StepFinished,
    StepPartial,
    StepStarted,
    WorkflowEvent,
    WorkflowFinished,
    WorkflowStarted,
)
from agentmesh.runtime import Agent, AgentCard, Request, Result, Skill, TextPart, Usage, wire
from agentmesh.runtime.errors import AgentError, ErrorCode
from agentmesh.v1 import gateway_pb2


class Flaky(Agent):
    """Fails its first ``failures`` calls (with a code upstream does not retry), then answers."""

    card = AgentCard(
        name="flaky", description="fails, then answers", skills=(Skill(id="work"),), streaming=False
    )

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def invoke(self, request: Request) -> Result:
        self.calls += 1
        if self.calls <= self.failures:
            raise AgentError(f"busy (call {self.calls})", code=ErrorCode.RESOURCE_EXHAUSTED)
        return Result.of(text=f"done after {self.calls}")


class Metered(Agent):
    """Answers with a fixed model usage, as an LLM-backed agent would."""

    card = AgentCard(name="metered", description="reports usage", skills=(Skill(id="count"),))

    async def invoke(self, request: Request) -> Result:
        return Result.of(text="metered", usage=Usage(10, 5, 0.25, "m"))


async def run(
    client: AsyncClient, workflow: str | dict[str, Any], text: str = "hi", **state: Any
) -> tuple[list[WorkflowEvent], CallError | None]:
    """Every event of one run, and the error that ended it (None when it completed)."""
    events: list[WorkflowEvent] = []
    try:
        async for event in client.run_workflow(workflow, text, state=state or None):
            events.append(event)
    except CallError as exc:
        return events, exc
    return events, None


def finished(events: list[WorkflowEvent]) -> dict[str, StepFinished]:
    return {e.step: e for e in events if isinstance(e, StepFinished)}


def final(events: list[WorkflowEvent]) -> WorkflowFinished:
    assert isinstance(events[-1], WorkflowFinished)
    return events[-1]


def steps(*items: dict[str, Any]) -> dict[str, Any]:
    return {"name": "t", "steps": list(items)}


async def test_parallel_group_partial_output_and_usage() -> None:
    definition = steps(
        {
            "id": "group",
            "parallel": [
                {"id": "echo", "agent": "probe", "skill": "echo", "input": "${input.text}"},
                {"id": "spell", "agent": "probe", "skill": "spell", "input": "abc"},
                {"id": "m1", "agent": "metered"},
                {"id": "m2", "agent": "metered"},
            ],
        },
        {
            "id": "merged",
            "compose": {
                "text": "${steps.echo.output.text}-${steps.spell.output.text}",
                "data": {"echoed_by": "${steps.echo.output.data.agent}"},
            },
        },
    )
    async with running_mesh(ProbeAgent(), Metered()) as mesh:
        async with AsyncClient(mesh.address) as client:
            events, error = await run(client, definition, "hi")
    assert error is None
    assert isinstance(events[0], WorkflowStarted)
    assert events[0].steps == ("group", "echo", "spell", "m1", "m2", "merged")
    letters = [
        p.text
        for e in events
        if isinstance(e, StepPartial) and e.step == "spell"
        for p in e.partial.parts
        if isinstance(p, TextPart)
    ]
    assert letters == ["a", "b", "c"]
    # Each child finished before its group did.
    order = [e.step for e in events if isinstance(e, StepFinished)]
    assert order.index("group") > max(order.index(s) for s in ("echo", "spell", "m1", "m2"))
    result = final(events)
    assert (result.text, result.data) == ("hi-abc", {"echoed_by": "probe"})
    assert (result.usage.total_tokens, result.usage.cost_usd) == (30, 0.5)
    assert {s.step: s.outcome for s in result.steps}["merged"] == "succeeded"


@pytest.mark.parametrize(
    ("strict", "taken", "skipped"), [(True, "block", "pass_"), (False, "pass_", "block")]
)
async def test_conditions_on_results_and_state(strict: bool, taken: str, skipped: str) -> None:
    definition = steps(
        {"id": "check", "agent": "probe", "skill": "echo", "input": "high"},
        {
            "id": "block",
            "when": "steps.check.output.text == 'high' and state.strict",
            "compose": {"text": "blocked"},
        },
        {"id": "pass_", "when": "not state.strict", "compose": {"text": "passed"}},
    )
    async with running_mesh(ProbeAgent()) as mesh:
        async with AsyncClient(mesh.address) as client:
            events, error = await run(client, definition, strict=strict)
    assert error is None
    outcomes = finished(events)
    assert outcomes[taken].outcome == "succeeded"
    assert outcomes[skipped].outcome == "skipped"
    assert outcomes[skipped].message.startswith("condition is false")
    assert final(events).text == ("blocked" if strict else "passed")


async def test_retry_until_success_then_fallback_when_retries_run_out() -> None:
    retried = steps({"id": "work", "agent": "flaky", "on_error": {"retry": 2}})
    fell_back = steps(
        {"id": "work", "agent": "flaky", "on_error": {"retry": 1, "fallback": "probe"}}
    )
    flaky = Flaky(failures=2)
    async with running_mesh(flaky, ProbeAgent()) as mesh:
        async with AsyncClient(mesh.address) as client:
            events, error = await run(client, retried)
            assert error is None
            assert flaky.calls == 3
            work = finished(events)["work"]
            assert (work.outcome, work.attempts, work.agent) == ("succeeded", 3, "flaky")
            assert [e.attempt for e in events if isinstance(e, StepStarted)] == [1, 2, 3]
            recovered = [e for e in events if isinstance(e, StepError)]
            assert [e.code for e in recovered] == [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2

            flaky.calls, flaky.failures = 0, 5
            events, error = await run(client, fell_back, "via fallback")
    assert error is None
    assert flaky.calls == 2
    work = finished(events)["work"]
    assert (work.outcome, work.agent, work.attempts) == ("fell_back", "probe", 3)
    assert final(events).text == "via fallback"


async def test_compensation_runs_then_the_run_fails_with_the_step_status() -> None:
    definition = steps(
        {
            "id": "charge",
            "agent": "probe",
            "skill": "crash",
            "on_error": {
                "compensate": {
                    "agent": "probe",
                    "skill": "echo",
                    "input": "undo after ${error.code}",
                }
            },
        },
        {"id": "ship", "agent": "probe", "skill": "echo"},
    )
    async with running_mesh(ProbeAgent()) as mesh:
        async with AsyncClient(mesh.address) as client:
            events, error = await run(client, definition)
    assert error is not None
    assert error.code == grpc.StatusCode.INTERNAL
    assert error.message.startswith("workflow 't' failed: step 'charge' failed: agent 'probe'")
    assert "secret" not in error.message  # the agent's own failure text never leaks
    outcomes = finished(events)
    assert outcomes["charge.compensate"].reply is not None
    assert outcomes["charge.compensate"].reply.text == "undo after INTERNAL"
    assert outcomes["charge"].outcome == "compensated"
    assert not any(isinstance(e, StepStarted) and e.step == "ship" for e in events)


async def test_skip_goes_on_and_fail_stops() -> None:
    skipping = steps(
        {"id": "optional", "agent": "flaky", "on_error": "skip"},
        {"id": "after", "compose": {"text": "optional was ${steps.optional.outcome}"}},
    )
    failing = steps(
        {"id": "needed", "agent": "flaky", "on_error": "fail"},
        {"id": "after", "compose": {"text": "never"}},
    )
    async with running_mesh(Flaky(failures=100)) as mesh:
        async with AsyncClient(mesh.address) as client:
            events, error = await run(client, skipping)
            assert error is None
            skipped = finished(events)["optional"]
            assert (skipped.outcome, skipped.code) == (
                "skipped",
                grpc.StatusCode.RESOURCE_EXHAUSTED,
            )
            assert final(events).text == "optional was skipped"

            events, error = await run(client, failing)
    assert error is not None
    assert error.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "step 'needed' failed: agent 'flaky': busy (call 2)" in error.message
    assert finished(events)["needed"].outcome == "failed"
    assert "after" not in finished(events)
    assert not any(isinstance(e, WorkflowFinished) for e in events)


@pytest.mark.parametrize(
    ("step", "fragment"),
    [
        (
            {"id": "b", "agent": "probe", "input": "${steps.c.output.text}"},
            "steps.b.input: steps.c.output.text: cycle: b -> c -> b",
        ),
        ({"id": "b", "agent": "nobody"}, "steps.b.agent: unknown agent 'nobody'"),
        (
            {"id": "b", "agent": "probe", "input": "${steps.nothing.output.text}"},
            "steps.b.input: steps.nothing.output.text: dangling reference to unknown step",
        ),
    ],
)
async def test_invalid_definitions_are_rejected_before_any_agent_is_called(
    step: dict[str, Any], fragment: str
) -> None:
    definition = steps(
        {"id": "a", "agent": "probe", "skill": "echo"},
        step,
        {"id": "c", "agent": "probe", "input": "${steps.b.output.text}"},
    )
    probe = ProbeAgent()
    async with running_mesh(probe) as mesh:
        async with AsyncClient(mesh.address) as client:
            events, error = await run(client, definition)
    assert events == []
    assert error is not None
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in error.message
    assert probe.seen_remaining == []  # not one call reached the agent


async def test_nested_workflows_and_the_depth_limit(tmp_path: Path) -> None:
    (tmp_path / "inner.yaml").write_text(
        "steps:\n  - id: shout\n    agent: probe\n    skill: echo\n"
        "    input: 'inner got ${input.text}'\n"
    )
    (tmp_path / "outer.yaml").write_text(
        "name: outer\nsteps:\n  - id: deeper\n    workflow: inner\n    input: '${input.text}!'\n"
    )
    calls_outer = steps({"id": "call", "workflow": "outer"})
    async with running_mesh(ProbeAgent(), workflow_dir=tmp_path, workflow_max_depth=2) as mesh:
        async with AsyncClient(mesh.address) as client:
            events, error = await run(client, "outer", "hi")
            assert error is None
            assert finished(events)["deeper/shout"].outcome == "succeeded"
            assert final(events).text == "inner got hi!"

            events, error = await run(client, calls_outer)
            assert events == []
            assert error is not None
            assert error.code == grpc.StatusCode.INVALID_ARGUMENT
            assert "steps.call.workflow: nesting depth 3" in error.message
            assert "over the limit of 2" in error.message

            events, error = await run(client, "missing")
    assert error is not None
    assert error.code == grpc.StatusCode.NOT_FOUND
    assert "declared workflows: inner, outer" in error.message


@pytest.mark.parametrize("path", ["grpc", "in-process"])
async def test_cancelling_the_run_cancels_the_agent_call(path: str) -> None:
    """Through RunWorkflow (the client cancels its call), and through ``gateway.workflows``."""
    definition = steps(
        {"id": "wait", "agent": "probe", "skill": "hold"},
        {"id": "after", "compose": {"text": "never"}},
    )
    probe = ProbeAgent()
    async with running_mesh(probe) as mesh:
        async with AsyncClient(mesh.address) as client:

            async def consume() -> None:
                if path == "grpc":
                    async for _ in client.run_workflow(definition, "x"):
                        pass
                else:
                    request = gateway_pb2.RunWorkflowRequest()
                    wire.dict_to_struct(definition, request.definition)
                    async for _ in mesh.gateway.workflows.run_workflow(request, time_remaining=30):
                        pass

            consumer = asyncio.create_task(consume())
            await asyncio.wait_for(probe.entered.wait(), 10)
            consumer.cancel()
            with pytest.raises(asyncio.CancelledError):
                await consumer
            await asyncio.wait_for(probe.cancelled.wait(), 10)


class FailsAfter(Agent):
    """Fails once ``event`` is set: a failure that comes while a sibling is mid-call."""

    card = AgentCard(name="fails-after", description="fails late", skills=(Skill(id="fail"),))

    def __init__(self, event: asyncio.Event) -> None:
        self.event = event

    async def invoke(self, request: Request) -> Result:
        await self.event.wait()
        raise AgentError("gave up", code=ErrorCode.FAILED_PRECONDITION)


async def test_a_failing_parallel_step_cancels_its_siblings() -> None:
    definition = steps(
        {
            "id": "group",
            "parallel": [
                {"id": "slow", "agent": "waiter", "skill": "hold"},
                {"id": "bad", "agent": "fails-after"},
            ],
        }
    )
    waiter = ProbeAgent("waiter")
    async with running_mesh(waiter, FailsAfter(waiter.entered)) as mesh:
        async with AsyncClient(mesh.address) as client:
            events, error = await run(client, definition)
            await asyncio.wait_for(waiter.cancelled.wait(), 10)
    assert error is not None
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "step 'group' failed: step 'bad' failed: agent 'fails-after': gave up" in error.message
    outcomes = {e.step: e.outcome for e in events if isinstance(e, StepFinished)}
    assert outcomes == {"bad": "failed", "slow": "cancelled", "group": "failed"}
