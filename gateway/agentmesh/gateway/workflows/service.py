"""Workflows in the gateway: the object behind RunWorkflow (and jobs that run workflows).

:class:`WorkflowService` resolves a request to a compiled workflow (declared,
or an inline definition checked on the spot), checks its agents against the
registry, runs it on the engine and turns the engine's events into wire
events. Agents are called through :class:`RegistryAgents`, i.e. the same
routing and upstream (deadlines, resilience) as a plain Invoke.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection, Mapping
from typing import Any

from agentmesh.gateway import inputs
from agentmesh.gateway.config import GatewayConfig, GatewaySettings
from agentmesh.gateway.dispatch import Dispatcher, fan_out_answer
from agentmesh.gateway.registry import Registry
from agentmesh.gateway.routing import route
from agentmesh.gateway.workflows.catalog import WorkflowCatalog
from agentmesh.gateway.workflows.engine import Engine, StepFailed
from agentmesh.gateway.workflows.events import Event, StepOutput
from agentmesh.gateway.workflows.spec import parse_workflow
from agentmesh.gateway.workflows.validate import (
    CompiledWorkflow,
    Limits,
    check_agents,
    compile_workflow,
)
from agentmesh.gateway.workflows.wire import event_to_proto, step_finished_from_proto
from agentmesh.runtime import wire
from agentmesh.runtime.errors import AgentError, FailedPrecondition, InvalidInput
from agentmesh.runtime.types import JSONValue, Message, Partial
from agentmesh.v1 import gateway_pb2
from agentmesh.v1 import messages_pb2 as pb

INLINE_LABEL = (
    "(inline)"  # metrics label of inline definitions: names sent by clients are unbounded
)


class RegistryAgents:
    """The engine's view of the agents: the registry for checks, the dispatcher for calls
    (so a step is routed, cached and guarded like any Invoke)."""

    def __init__(self, registry: Registry, dispatcher: Dispatcher) -> None:
        self._registry = registry
        self._dispatcher = dispatcher

    def agent_names(self) -> Collection[str]:
        return {e.name for e in self._registry.entries}

    def skills_of(self, agent: str) -> frozenset[str] | None:
        entry = self._registry.get(agent)
        return entry.skills if entry is not None and entry.card is not None else None

    def options_schema(self, agent: str, skill: str) -> Mapping[str, Any] | None:
        entry = self._registry.get(agent)
        return entry.options_schema(skill) if entry is not None else None

    def skill_offered(self, skill: str) -> bool | None:
        if self._registry.with_skill(skill):
            return True
        # An agent whose card has not arrived yet might offer it.
        return False if all(e.card is not None for e in self._registry.entries) else None

    async def call(
        self,
        agent: str,
        skill: str,
        message: Message,
        options: Mapping[str, JSONValue],
        *,
        time_remaining: float | None,
    ) -> AsyncIterator[Partial | StepOutput]:
        entry = route(self._registry, agent, skill)
        request = pb.InvokeRequest(agent=entry.name, skill=skill)
        wire.message_to_proto(message, request.message)
        wire.dict_to_struct(options, request.options)
        if entry.card is not None and entry.card.capabilities.streaming:
            events = self._dispatcher.stream(request, time_remaining=time_remaining)
            async for event in events:
                kind = event.WhichOneof("event")
                if kind == "partial":
                    yield wire.partial_from_proto(event.partial)
                elif kind == "final":
                    yield _output(event.final, entry.name, skill)
            return
        answer = await self._dispatcher.invoke(request, time_remaining=time_remaining)
        yield _output(answer.response, entry.name, skill)

    async def fan_out(
        self,
        request: gateway_pb2.FanOutRequest,
        message: Message,
        options: Mapping[str, JSONValue],
        *,
        time_remaining: float | None,
    ) -> StepOutput:
        fan = gateway_pb2.FanOutRequest()
        fan.CopyFrom(request)
        wire.message_to_proto(message, fan.message)
        if options:
            wire.dict_to_struct(options, fan.options)
        outcome = await self._dispatcher.fan_out(fan, time_remaining=time_remaining)
        return StepOutput(wire.result_from_proto(fan_out_answer(outcome, "fan_out")))


def _output(response: pb.InvokeResponse, agent: str, skill: str) -> StepOutput:
    return StepOutput(
        wire.result_from_proto(response), response.agent or agent, response.skill or skill
    )


def load_catalog(config: GatewayConfig, settings: GatewaySettings) -> WorkflowCatalog:
    """The declared workflows, checked; WorkflowConfigError (a ConfigError) when one is bad."""
    return WorkflowCatalog.load(
        config.workflows, settings.workflow_dir, list(config.agents), limits_from(settings)
    )


def limits_from(settings: GatewaySettings) -> Limits:
    return Limits(
        max_steps=settings.workflow_max_steps,
        max_depth=settings.workflow_max_depth,
        max_parallel=settings.workflow_max_parallel,
    )


class WorkflowService:
    """Declared workflows plus the engine; ``run_workflow`` is RunWorkflow without gRPC."""

    def __init__(
        self,
        catalog: WorkflowCatalog,
        registry: Registry,
        dispatcher: Dispatcher,
        *,
        max_parts: int | None = None,
        max_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        self.catalog = catalog
        self._agents = RegistryAgents(registry, dispatcher)
        self._engine = Engine(self._agents, max_bytes=max_bytes)
        self._max_parts = max_parts

    def declared(self, name: str) -> bool:
        return name in self.catalog.names()

    def resolve(self, request: gateway_pb2.RunWorkflowRequest) -> tuple[CompiledWorkflow, str]:
        """The workflow a request asks for, checked; and its metrics label."""
        has_definition = request.HasField("definition") and bool(request.definition.fields)
        if request.workflow and has_definition:
            raise InvalidInput("workflow", "set workflow (a declared name) or definition, not both")
        if request.workflow:
            workflow = self.catalog.get(request.workflow)
            label = workflow.name
        elif has_definition:
            raw: dict[str, Any] = wire.struct_to_dict(request.definition)
            spec = parse_workflow(raw)
            workflow = compile_workflow(
                spec, resolve=self.catalog.resolve_nested, limits=self.catalog.limits
            )
            label = INLINE_LABEL
        else:
            raise InvalidInput(
                "workflow", "name a declared workflow, or send its definition in definition"
            )
        check_agents(workflow, self._agents)
        return workflow, label

    async def run_workflow(
        self, request: gateway_pb2.RunWorkflowRequest, *, time_remaining: float | None
    ) -> AsyncIterator[gateway_pb2.WorkflowEvent]:
        """Run a workflow, yielding its events; the last one is ``final``.

        Raises AgentError before any event when the request or definition is
        invalid, and after the events that explain it when a step fails.
        Closing or cancelling the iteration cancels the run and its agent calls.
        """
        workflow, label = self.resolve(request)
        answers = inputs.answers.get()
        asking = workflow.asks
        if answers is None and asking is not None:
            raise FailedPrecondition(
                f"workflow {workflow.name!r} asks for input (step {asking!r}): submit it as a "
                "job (SubmitJob) and answer its question with ResumeJob"
            )
        kept = inputs.finished.get() or {}
        done = {name: step_finished_from_proto(s) for name, s in kept.items()}
        message = wire.message_from_proto(request.input, max_parts=self._max_parts)
        state = wire.struct_to_dict(request.state)
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        run = asyncio.create_task(
            self._engine.run(
                workflow,
                message,
                state=state,
                emit=queue.put_nowait,
                time_remaining=time_remaining,
                label=label,
                answers=answers,
                done=done,
            ),
            name=f"workflow {workflow.name}",
        )
        run.add_done_callback(lambda _: queue.put_nowait(None))
        try:
            while (event := await queue.get()) is not None:
                yield event_to_proto(event)
            try:
                finished = run.result()
            except StepFailed as exc:
                raise AgentError(
                    f"workflow {workflow.name!r} failed: {exc.message}", code=exc.code
                ) from None
            yield event_to_proto(finished)
        finally:
            if not run.done():
                run.cancel()
            # Wait, so the agents' calls are cancelled before the caller moves on
            # (and the run's outcome is always retrieved).
            await asyncio.gather(run, return_exceptions=True)
