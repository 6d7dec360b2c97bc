"""The one path every unit of work takes through the gateway.

Invoke and InvokeStream, workflow steps, fan-out legs, jobs and A2A messages
all hand their work here as an ``InvokeRequest`` whose ``agent`` field holds a
target (``NAME``, ``NAME/SKILL``, ``skill:SKILL``, ``workflow:NAME``, or
nothing: routed). The dispatcher resolves the target through the router
(declared routes, router agent, default route), applies the response cache
where the agent or route declares one, and calls the guarded upstream
(breakers, retries, deadlines, hedging, fallbacks). A target that is a
declared workflow or a routed fan-out runs on the composites attached after
construction, which themselves dispatch their steps and legs back here.

Scopes are checked where work enters the gateway (the caller's principal,
against what it names); routing and caching apply here, the same way wherever
the work came from.

Conversations are kept here too: a message with a ``context_id``, sent by a
caller to an agent whose card declares ``takes_history``, goes with its
session's turns and its answer is recorded (``sessions``); such a turn is
never answered from the cache. A declared route may override the session
settings, or keep no session at all (``history: false``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from agentmesh.gateway.auth import current_principal
from agentmesh.gateway.cache import ResponseCache, cache_key
from agentmesh.gateway.routing import Router, Selection, addressed, route
from agentmesh.gateway.sessions import Conversations, Turn
from agentmesh.gateway.targets import WORKFLOW_PREFIX, Target, parse_target
from agentmesh.gateway.upstream import Upstream
from agentmesh.runtime import wire
from agentmesh.runtime.errors import AgentError, ErrorCode, NotFound
from agentmesh.v1 import gateway_pb2
from agentmesh.v1 import messages_pb2 as pb


class WorkflowRunner(Protocol):
    def declared(self, name: str) -> bool: ...

    def run_workflow(
        self, request: gateway_pb2.RunWorkflowRequest, *, time_remaining: float | None
    ) -> AsyncIterator[gateway_pb2.WorkflowEvent]: ...


class FanOutRunner(Protocol):
    async def run(
        self, request: gateway_pb2.FanOutRequest, *, time_remaining: float | None
    ) -> gateway_pb2.FanOutResponse: ...


@dataclass(frozen=True, slots=True)
class Answer:
    """A unary dispatch's response, and how the cache took part ("hit", "miss" or "")."""

    response: pb.InvokeResponse
    cache: str = ""


class Dispatcher:
    """Resolves, routes, caches and calls: see the module docstring."""

    def __init__(
        self,
        router: Router,
        upstream: Upstream,
        cache: ResponseCache,
        conversations: Conversations | None = None,
    ) -> None:
        self._router = router
        self._upstream = upstream
        self._cache = cache
        self._conversations = conversations
        if conversations is not None:
            conversations.attach(self._summarize)
        self._workflows: WorkflowRunner | None = None
        self._fanout: FanOutRunner | None = None

    def attach(self, *, workflows: WorkflowRunner, fanout: FanOutRunner) -> None:
        """The composites (built on this dispatcher) that serve workflow and fan-out targets."""
        self._workflows = workflows
        self._fanout = fanout

    def check(self, request: pb.InvokeRequest) -> Target:
        """The request's target, checked without calling anything (NOT_FOUND when it names
        an unknown agent, skill or workflow); a routed target is resolved when it runs."""
        target = parse_target(request.agent, request.skill)
        if target.workflow:
            if self._workflows is None or not self._workflows.declared(target.workflow):
                raise NotFound(f"no workflow {target.workflow!r} is declared")
        elif not target.routed:
            route(self._router.registry, target.agent, target.skill)
        return target

    async def invoke(
        self, request: pb.InvokeRequest, *, time_remaining: float | None, fresh: bool = False
    ) -> Answer:
        """One response for ``request``; ``fresh`` skips a cache lookup (and refreshes it)."""
        selection = await self._router.select(request, time_remaining=time_remaining)
        if selection.workflow:
            final: pb.InvokeResponse | None = None
            async for event in self._workflow_events(selection, request, time_remaining):
                if event.HasField("final"):
                    final = event.final
            assert final is not None  # a workflow run ends with its final event or raises
            return Answer(final)
        if selection.fan_out is not None:
            return Answer(await self._fan_out(selection, request, time_remaining))
        forwarded = addressed(request, selection)
        turn = await self._begin_turn(selection, forwarded)
        if turn is not None:
            response = await self._upstream.invoke(
                selection.agent, turn.request, time_remaining=time_remaining
            )
            await self._finish_turn(turn, response)
            return Answer(response)
        key = self._cache_key(selection, request)
        if key is None:
            return Answer(
                await self._upstream.invoke(
                    selection.agent, forwarded, time_remaining=time_remaining
                )
            )
        if not fresh:
            cached = await self._cache.get(key)
            if cached is not None:
                return Answer(cached, "hit")
        response = await self._upstream.invoke(
            selection.agent, forwarded, time_remaining=time_remaining
        )
        await self._cache.put(key, response, self._ttl(selection))
        return Answer(response, "miss")

    async def stream(
        self, request: pb.InvokeRequest, *, time_remaining: float | None
    ) -> AsyncIterator[pb.InvokeEvent]:
        """``request``'s events: started, partials (a workflow's progress too), final."""
        selection = await self._router.select(request, time_remaining=time_remaining)
        if selection.workflow:
            async for event in self._workflow_events(selection, request, time_remaining):
                yield event
            return
        if selection.fan_out is not None:
            yield pb.InvokeEvent(started=pb.TaskStarted(agent=selection.route))
            response = await self._fan_out(selection, request, time_remaining)
            yield pb.InvokeEvent(final=response)
            return
        forwarded = addressed(request, selection)
        turn = await self._begin_turn(selection, forwarded)
        if turn is not None:
            async for event in self._upstream.stream(
                selection.agent, turn.request, time_remaining=time_remaining
            ):
                if event.HasField("final"):
                    await self._finish_turn(turn, event.final)
                yield event
            return
        key = self._cache_key(selection, request)
        if key is not None:
            cached = await self._cache.get(key)
            if cached is not None:
                started = pb.TaskStarted(
                    task_id=cached.task_id, agent=cached.agent, skill=cached.skill
                )
                yield pb.InvokeEvent(started=started)
                yield pb.InvokeEvent(final=cached)
                return
        async for event in self._upstream.stream(
            selection.agent, forwarded, time_remaining=time_remaining
        ):
            if key is not None and event.HasField("final"):
                await self._cache.put(key, event.final, self._ttl(selection))
            yield event

    async def fan_out(
        self, request: gateway_pb2.FanOutRequest, *, time_remaining: float | None
    ) -> gateway_pb2.FanOutResponse:
        """A fan-out (a workflow's fan_out step): its legs come back through this dispatcher."""
        if self._fanout is None:
            raise AgentError("fan-out is not available", code=ErrorCode.UNIMPLEMENTED)
        return await self._fanout.run(request, time_remaining=time_remaining)

    # -- sessions ------------------------------------------------------------

    async def _begin_turn(self, selection: Selection, request: pb.InvokeRequest) -> Turn | None:
        """The turn of a session, when ``request`` continues one (see the module docstring).

        Only work a caller sent has an owner; work without one (a job's) is stateless."""
        card = selection.agent.card
        principal = current_principal()
        if (
            self._conversations is None
            or not selection.history
            or principal is None
            or not request.message.context_id
            or card is None
            or not card.capabilities.takes_history
        ):
            return None
        return await self._conversations.begin(
            principal.owner, selection.agent.name, request, overrides=selection.session
        )

    async def _finish_turn(self, turn: Turn, response: pb.InvokeResponse) -> None:
        assert self._conversations is not None
        await self._conversations.finish(turn, response)

    async def _summarize(self, target: str, text: str) -> str:
        """The summary ``target`` (``AGENT/SKILL``) makes of ``text``: how sessions compact."""
        agent, _, skill = target.partition("/")
        message = pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text=text)])
        request = pb.InvokeRequest(agent=agent, skill=skill, message=message)
        answer = await self.invoke(request, time_remaining=None)
        return wire.result_from_proto(answer.response).text

    # -- caching -------------------------------------------------------------

    @staticmethod
    def _cache_key(selection: Selection, request: pb.InvokeRequest) -> str | None:
        if selection.cache is None:
            return None
        entry = selection.agent
        version = entry.card.version if entry.card else ""
        return cache_key(entry.name, version, selection.skill, request)

    @staticmethod
    def _ttl(selection: Selection) -> float:
        assert selection.cache is not None
        return selection.cache.ttl

    # -- composite targets -----------------------------------------------------

    async def _workflow_events(
        self, selection: Selection, request: pb.InvokeRequest, time_remaining: float | None
    ) -> AsyncIterator[pb.InvokeEvent]:
        if self._workflows is None:
            raise AgentError("workflows are not available", code=ErrorCode.UNIMPLEMENTED)
        name = WORKFLOW_PREFIX + selection.workflow
        run = gateway_pb2.RunWorkflowRequest(workflow=selection.workflow, input=request.message)
        if request.HasField("options"):
            run.state.CopyFrom(request.options)  # a workflow's options are its initial state
        async for event in self._workflows.run_workflow(run, time_remaining=time_remaining):
            converted = _workflow_event(event, name)
            if converted is not None:
                yield converted

    async def _fan_out(
        self, selection: Selection, request: pb.InvokeRequest, time_remaining: float | None
    ) -> pb.InvokeResponse:
        assert selection.fan_out is not None
        fan = gateway_pb2.FanOutRequest()
        fan.CopyFrom(selection.fan_out)
        fan.message.CopyFrom(request.message)
        if request.HasField("options") and not fan.HasField("options"):
            fan.options.CopyFrom(request.options)
        outcome = await self.fan_out(fan, time_remaining=time_remaining)
        return fan_out_answer(outcome, selection.route)


def fan_out_answer(outcome: gateway_pb2.FanOutResponse, source: str) -> pb.InvokeResponse:
    """A fan-out as one response: its aggregate, or (collect) every leg's text and data."""
    if outcome.HasField("result") and outcome.result.artifacts:
        return outcome.result
    if outcome.succeeded == 0:
        raise AgentError(
            f"fan-out {source!r}: {outcome.detail or 'no leg succeeded'}",
            code=ErrorCode.UNAVAILABLE,
        )
    legs = []
    texts = []
    for leg in outcome.legs:
        result = wire.result_from_proto(leg.result) if leg.code == 0 else None
        if result is not None and result.text:
            texts.append(f"[{leg.agent}]\n{result.text}")
        legs.append(
            {
                "agent": leg.agent,
                "skill": leg.skill,
                "code": leg.code,
                "text": result.text if result else "",
                "data": result.data if result else None,
                "message": leg.message,
            }
        )
    response = pb.InvokeResponse(agent=source, state=pb.TASK_STATE_COMPLETED, usage=outcome.usage)
    artifact = response.artifacts.add(artifact_id="output")
    if texts:
        artifact.parts.add(text="\n\n".join(texts))
    wire.python_to_value(
        {"legs": legs, "detail": outcome.detail},
        artifact.parts.add(media_type="application/json").data,
    )
    return response


_OUTCOMES = {
    gateway_pb2.STEP_OUTCOME_SUCCEEDED: "succeeded",
    gateway_pb2.STEP_OUTCOME_FAILED: "failed",
    gateway_pb2.STEP_OUTCOME_SKIPPED: "skipped",
    gateway_pb2.STEP_OUTCOME_FELL_BACK: "fell_back",
}


def _workflow_event(event: gateway_pb2.WorkflowEvent, name: str) -> pb.InvokeEvent | None:
    """A workflow's event as an InvokeStream event (its steps' progress, partials, final)."""
    kind = event.WhichOneof("event")
    if kind == "started":
        return pb.InvokeEvent(started=pb.TaskStarted(task_id=event.started.run_id, agent=name))
    if kind == "step_started":
        step = event.step_started
        progress = pb.Progress(
            step=step.step, agent=step.agent, status="started", attempt=step.attempt
        )
        return pb.InvokeEvent(progress=progress)
    if kind == "step_partial":
        partial = pb.PartialOutput()
        partial.CopyFrom(event.step_partial.partial)
        partial.artifact_id = f"{event.step_partial.step}/{partial.artifact_id or 'output'}"
        return pb.InvokeEvent(partial=partial)
    if kind == "step_finished":
        done = event.step_finished
        status = _OUTCOMES.get(done.outcome, "finished")
        progress = pb.Progress(
            step=done.step, agent=done.agent, status=status, message=done.message
        )
        return pb.InvokeEvent(progress=progress)
    if kind == "final":
        final = pb.InvokeResponse()
        final.CopyFrom(event.final.result)
        final.task_id = event.final.run_id
        final.agent = name
        final.state = pb.TASK_STATE_COMPLETED
        final.usage.CopyFrom(event.final.usage)
        return pb.InvokeEvent(final=final)
    if kind == "error":
        return pb.InvokeEvent(error=event.error)
    return None


__all__ = ["Answer", "Dispatcher", "FanOutRunner", "WorkflowRunner", "fan_out_answer"]
