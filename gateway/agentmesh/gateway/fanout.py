"""Fan-out: one request to several agents at once, and one answer from many.

A fan-out resolves its legs (named targets, or every agent offering a skill),
runs them concurrently under a width limit and a per-leg deadline, stops as
its partial-result policy says (every leg, a quorum of successes, the first
success) and cancels the legs it no longer needs. Every leg is reported with
its agent, status, latency and result; an aggregation strategy then turns the
successful legs into one result:

* ``COLLECT``: none; the caller reads the legs.
* ``FIRST_SUCCESS``: the first leg to succeed.
* ``MAJORITY``: the most common answer; answers are compared by ``field`` (a
  dotted path into the leg's data), else by the whole data, else by the text
  (trimmed, case-folded). A tie for first place is no majority.
* ``BEST_SCORE``: the leg whose numeric ``field`` is highest.
* ``MERGE``: the legs' data objects merged key by key in leg order (nested
  objects merged recursively, lists concatenated, later scalars win).
* ``REDUCE``: every leg's output sent to an aggregator agent, whose answer is
  the result.

The fan-out itself succeeds whenever it ran: a policy that could not be met
or an aggregate that could not be formed gives a result in state FAILED with
``detail`` saying why, so the caller still sees every leg.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry import trace

from agentmesh.gateway.dispatch import Dispatcher
from agentmesh.gateway.registry import AgentEntry, Registry
from agentmesh.gateway.routing import route
from agentmesh.runtime import wire
from agentmesh.runtime.errors import AgentError, InvalidInput
from agentmesh.runtime.schema import check_options
from agentmesh.runtime.status import grpc_code, internal_message
from agentmesh.telemetry.metrics import FANOUT_WIDTH
from agentmesh.v1 import gateway_pb2
from agentmesh.v1 import messages_pb2 as pb

_tracer = trace.get_tracer("agentmesh.gateway.fanout")

MAX_FIELD_CHARS = 256


@dataclass(frozen=True, slots=True)
class FanOutLimits:
    """Bounds on one fan-out request."""

    max_legs: int = 64


@dataclass(slots=True)
class _Leg:
    index: int
    entry: AgentEntry
    skill: str
    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    message: str = ""
    latency: float = 0.0
    response: pb.InvokeResponse | None = None
    done: bool = False

    @property
    def ok(self) -> bool:
        return self.response is not None


@dataclass(slots=True)
class _Outcome:
    """An aggregate: the result (None when it could not be formed) and why."""

    result: pb.InvokeResponse | None
    detail: str
    failed: bool = False
    extra_usage: list[pb.Usage] = field(default_factory=list)

    @classmethod
    def failure(cls, detail: str) -> _Outcome:
        return cls(None, detail, failed=True)


class FanOut:
    """Runs fan-out requests; every leg (and the reducer) goes through the dispatcher, so
    routes, the cache and the guarded upstream apply to legs as to any Invoke."""

    def __init__(
        self, registry: Registry, dispatcher: Dispatcher, limits: FanOutLimits | None = None
    ) -> None:
        self._registry = registry
        self._dispatcher = dispatcher
        self._limits = limits or FanOutLimits()

    def validate(self, request: gateway_pb2.FanOutRequest) -> None:
        """Raise the error ``run`` would raise before calling any agent."""
        self._plan(request)
        self._aggregator(request)

    async def run(
        self, request: gateway_pb2.FanOutRequest, *, time_remaining: float | None
    ) -> gateway_pb2.FanOutResponse:
        """Run ``request``; raises AgentError only for a request that cannot start."""
        legs = self._plan(request)
        aggregator = self._aggregator(request)
        FANOUT_WIDTH.observe(len(legs))
        loop = asyncio.get_running_loop()
        started = loop.time()
        await self._run_legs(request, legs, time_remaining)
        left = None if time_remaining is None else time_remaining - (loop.time() - started)
        outcome = await self._aggregate(request, legs, aggregator, left)
        return _response(legs, outcome)

    # -- planning ----------------------------------------------------------

    def _plan(self, request: gateway_pb2.FanOutRequest) -> list[_Leg]:
        if request.targets:
            legs = []
            for i, target in enumerate(request.targets):
                skill = target.skill or request.skill
                try:
                    entry = route(self._registry, target.agent, skill)
                except AgentError as exc:
                    raise _in_field(exc, f"targets[{i}]") from None
                legs.append(_Leg(i, entry, skill))
        elif request.skill:
            entries = self._registry.with_skill(request.skill)
            if not entries:
                route(self._registry, "", request.skill)  # raises NOT_FOUND naming known skills
            legs = [_Leg(i, e, request.skill) for i, e in enumerate(entries)]
        else:
            raise InvalidInput(
                "targets", "name the agents to call, or set skill to call every agent offering it"
            )
        options = wire.struct_to_dict(request.options)
        if options:
            for leg in legs:  # before any call: a leg refused for a typo helps nobody
                check_options(
                    leg.entry.options_schema(leg.skill),
                    options,
                    owner=f"skill {leg.skill or '(default)'!r} of agent {leg.entry.name!r}",
                )
        if len(legs) > self._limits.max_legs:
            raise InvalidInput(
                "targets", f"{len(legs)} legs is over the limit of {self._limits.max_legs}"
            )
        if request.policy == gateway_pb2.PARTIAL_POLICY_QUORUM and request.quorum > len(legs):
            raise InvalidInput("quorum", f"{request.quorum} is more than the {len(legs)} legs")
        if not math.isfinite(request.leg_timeout_seconds) or request.leg_timeout_seconds < 0:
            raise InvalidInput("leg_timeout_seconds", "must be a non-negative number of seconds")
        if len(request.field) > MAX_FIELD_CHARS:
            raise InvalidInput("field", f"longer than {MAX_FIELD_CHARS} characters")
        if request.aggregation == gateway_pb2.AGGREGATION_BEST_SCORE and not request.field:
            raise InvalidInput("field", "BEST_SCORE needs the data field holding the score")
        return legs

    def _aggregator(self, request: gateway_pb2.FanOutRequest) -> AgentEntry | None:
        if request.aggregation != gateway_pb2.AGGREGATION_REDUCE:
            return None
        if not request.aggregator.agent and not request.aggregator.skill:
            raise InvalidInput("aggregator", "REDUCE needs the aggregator agent (or skill)")
        try:
            return route(self._registry, request.aggregator.agent, request.aggregator.skill)
        except AgentError as exc:
            raise _in_field(exc, "aggregator") from None

    # -- running -----------------------------------------------------------

    async def _run_legs(
        self,
        request: gateway_pb2.FanOutRequest,
        legs: list[_Leg],
        time_remaining: float | None,
    ) -> None:
        width = request.max_width or len(legs)
        gate = asyncio.Semaphore(width)
        needed = _successes_needed(request, len(legs))
        enough = asyncio.Event()
        successes = 0
        budget = time_remaining
        if request.leg_timeout_seconds:
            budget = min(budget or math.inf, request.leg_timeout_seconds)

        async def run_leg(leg: _Leg) -> None:
            nonlocal successes
            async with gate:
                if enough.is_set():
                    return  # the policy was met while this leg waited for a slot
                await self._call(request, leg, budget)
            if leg.ok:
                successes += 1
                if needed is not None and successes >= needed:
                    enough.set()

        tasks = [asyncio.create_task(run_leg(leg)) for leg in legs]
        policy_met = asyncio.create_task(enough.wait())
        try:
            pending: set[asyncio.Task[Any]] = set(tasks)
            while pending and not enough.is_set():
                _, pending = await asyncio.wait(
                    pending | {policy_met}, return_when=asyncio.FIRST_COMPLETED
                )
                pending.discard(policy_met)
        finally:
            # Legs the policy no longer needs (or a cancelled caller): stop their agents' work.
            for task in (*tasks, policy_met):
                task.cancel()
            await asyncio.gather(*tasks, policy_met, return_exceptions=True)
        for leg in legs:
            if not leg.done:
                leg.code, leg.message = (
                    grpc.StatusCode.CANCELLED,
                    "cancelled: the fan-out policy was met",
                )

    async def _call(
        self, request: gateway_pb2.FanOutRequest, leg: _Leg, budget: float | None
    ) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        leg_request = pb.InvokeRequest(agent=leg.entry.name, skill=leg.skill)
        if request.HasField("message"):
            leg_request.message.CopyFrom(request.message)
        if request.HasField("options"):
            leg_request.options.CopyFrom(request.options)
        with _tracer.start_as_current_span("fanout leg") as span:
            if span.is_recording():
                span.set_attribute("agentmesh.agent", leg.entry.name)
                span.set_attribute("agentmesh.skill", leg.skill)
                span.set_attribute("agentmesh.leg", leg.index)
            try:
                remaining = None if budget is None else budget - (loop.time() - started)
                answer = await self._dispatcher.invoke(leg_request, time_remaining=remaining)
                leg.response = answer.response
                leg.code = grpc.StatusCode.OK
            except asyncio.CancelledError:
                leg.code, leg.message = (
                    grpc.StatusCode.CANCELLED,
                    "cancelled: the fan-out policy was met",
                )
                leg.latency = loop.time() - started
                leg.done = True
                raise
            except AgentError as exc:
                leg.code, leg.message = grpc_code(exc.code), exc.message
            except Exception as exc:  # a gateway bug must cost one leg, not the fan-out
                leg.code = grpc.StatusCode.INTERNAL
                leg.message = internal_message(exc, where="FanOut leg")
            if span.is_recording():
                span.set_attribute("rpc.grpc.status_code", leg.code.value[0])
        leg.latency = loop.time() - started
        leg.done = True

    # -- aggregating -------------------------------------------------------

    async def _aggregate(
        self,
        request: gateway_pb2.FanOutRequest,
        legs: list[_Leg],
        aggregator: AgentEntry | None,
        time_remaining: float | None,
    ) -> _Outcome:
        succeeded = [leg for leg in legs if leg.ok]
        needed = _successes_needed(request, len(legs))
        if needed is not None and len(succeeded) < needed:
            return _Outcome.failure(
                f"policy not met: {len(succeeded)} of {len(legs)} legs succeeded, {needed} needed"
            )
        if not succeeded and request.aggregation != gateway_pb2.AGGREGATION_COLLECT:
            return _Outcome.failure(f"no leg succeeded ({len(legs)} failed)")
        kind = request.aggregation
        if kind in (gateway_pb2.AGGREGATION_UNSPECIFIED, gateway_pb2.AGGREGATION_COLLECT):
            return _Outcome(None, f"{len(succeeded)} of {len(legs)} legs succeeded")
        if kind == gateway_pb2.AGGREGATION_FIRST_SUCCESS:
            first = min(succeeded, key=lambda leg: leg.latency)
            return _Outcome(first.response, f"first success: {first.entry.name}")
        if kind == gateway_pb2.AGGREGATION_MAJORITY:
            return _majority(succeeded, request.field)
        if kind == gateway_pb2.AGGREGATION_BEST_SCORE:
            return _best_score(succeeded, request.field)
        if kind == gateway_pb2.AGGREGATION_MERGE:
            return _merge(succeeded)
        if kind == gateway_pb2.AGGREGATION_REDUCE:
            assert aggregator is not None
            return await self._reduce(request, succeeded, aggregator, time_remaining)
        raise InvalidInput("aggregation", f"unknown aggregation {kind}")

    async def _reduce(
        self,
        request: gateway_pb2.FanOutRequest,
        succeeded: list[_Leg],
        aggregator: AgentEntry,
        time_remaining: float | None,
    ) -> _Outcome:
        texts, outputs = [], []
        for leg in succeeded:
            assert leg.response is not None
            result = wire.result_from_proto(leg.response)
            if result.text:
                texts.append(f"[{leg.entry.name}]\n{result.text}")
            outputs.append(
                {
                    "agent": leg.entry.name,
                    "skill": leg.skill,
                    "text": result.text,
                    "data": result.data,
                }
            )
        reduce_request = pb.InvokeRequest(
            agent=aggregator.name, skill=request.aggregator.skill or request.skill
        )
        reduce_request.message.role = pb.ROLE_USER
        if texts:
            reduce_request.message.parts.add(text="\n\n".join(texts))
        data_part = reduce_request.message.parts.add(media_type="application/json")
        wire.python_to_value({"legs": outputs}, data_part.data)
        if request.HasField("options"):
            reduce_request.options.CopyFrom(request.options)
        try:
            answer = await self._dispatcher.invoke(reduce_request, time_remaining=time_remaining)
            response = answer.response
        except AgentError as exc:
            return _Outcome.failure(
                f"aggregator {aggregator.name!r} failed: {exc.code.name}: {exc.message}"
            )
        return _Outcome(
            response,
            f"reduced {len(succeeded)} legs through {aggregator.name}",
            extra_usage=[response.usage],
        )


def _successes_needed(request: gateway_pb2.FanOutRequest, legs: int) -> int | None:
    """Successes after which the fan-out stops waiting; None: wait for every leg."""
    if request.policy == gateway_pb2.PARTIAL_POLICY_FIRST:
        return 1
    if request.policy == gateway_pb2.PARTIAL_POLICY_QUORUM:
        return request.quorum or legs // 2 + 1
    return None


def _in_field(exc: AgentError, where: str) -> AgentError:
    """``exc`` (same status) with the request field it concerns named in front."""
    return AgentError(f"{where}: {exc.message}", code=exc.code)


def _lookup(data: Any, path: str) -> Any:
    """The value at dotted ``path`` in ``data`` (list indices allowed), or None."""
    value = data
    for key in path.split("."):
        if isinstance(value, dict):
            value = value.get(key)
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return None
    return value


def _answer_key(leg: _Leg, path: str) -> str | None:
    """What a leg voted for, as a canonical string (None: it gave no answer)."""
    assert leg.response is not None
    result = wire.result_from_proto(leg.response)
    if path:
        value = _lookup(result.data, path)
        if value is None:
            return None
    elif result.data is not None:
        value = result.data
    else:
        text = " ".join(result.text.split()).casefold()
        return text or None
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _majority(succeeded: Sequence[_Leg], path: str) -> _Outcome:
    votes: dict[str, list[_Leg]] = {}
    for leg in succeeded:
        key = _answer_key(leg, path)
        if key is not None:
            votes.setdefault(key, []).append(leg)
    if not votes:
        where = f"field {path!r}" if path else "an answer"
        return _Outcome.failure(f"no leg's output has {where} to vote on")
    ranked = Counter({key: len(legs) for key, legs in votes.items()}).most_common()
    (winner, count), ties = ranked[0], [k for k, n in ranked[1:] if n == ranked[0][1]]
    if ties:
        return _Outcome.failure(
            f"no majority: {len(ties) + 1} answers tied with {count} votes each"
        )
    chosen = votes[winner][0]
    assert chosen.response is not None
    result = pb.InvokeResponse()
    result.CopyFrom(chosen.response)
    wire.dict_to_struct(
        {
            "votes": count,
            "voters": len(succeeded),
            "answer": json.loads(winner) if _is_json(winner) else winner,
        },
        result.metadata,
    )
    return _Outcome(result, f"{count} of {len(succeeded)} legs agreed")


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _best_score(succeeded: Sequence[_Leg], path: str) -> _Outcome:
    scored: list[tuple[float, _Leg]] = []
    for leg in succeeded:
        assert leg.response is not None
        value = _lookup(wire.result_from_proto(leg.response).data, path)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            scored.append((float(value), leg))
    if not scored:
        return _Outcome.failure(f"no leg's output has a numeric {path!r}")
    score, best = max(scored, key=lambda pair: pair[0])
    return _Outcome(best.response, f"best {path} = {score:g} from {best.entry.name}")


def _merge_values(into: dict[str, Any], other: dict[str, Any]) -> None:
    for key, value in other.items():
        current = into.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            _merge_values(current, value)
        elif isinstance(current, list) and isinstance(value, list):
            current.extend(value)
        else:
            into[key] = value


def _merge(succeeded: Sequence[_Leg]) -> _Outcome:
    merged: dict[str, Any] = {}
    for leg in succeeded:
        assert leg.response is not None
        data = wire.result_from_proto(leg.response).data
        _merge_values(merged, data if isinstance(data, dict) else {leg.entry.name: data})
    result = pb.InvokeResponse(state=pb.TASK_STATE_COMPLETED, agent="gateway", skill="merge")
    artifact = result.artifacts.add(artifact_id="merged", name="merged")
    wire.python_to_value(merged, artifact.parts.add(media_type="application/json").data)
    return _Outcome(result, f"merged the data of {len(succeeded)} legs")


def _response(legs: Sequence[_Leg], outcome: _Outcome) -> gateway_pb2.FanOutResponse:
    response = gateway_pb2.FanOutResponse(detail=outcome.detail)
    usage = response.usage
    for leg in legs:
        out = response.legs.add(
            agent=leg.entry.name,
            skill=leg.skill,
            code=leg.code.value[0],
            message=leg.message,
            latency_ms=leg.latency * 1000,
        )
        if leg.response is not None:
            out.result.CopyFrom(leg.response)
            _add_usage(usage, leg.response.usage)
            response.succeeded += 1
        else:
            response.failed += 1
    for extra in outcome.extra_usage:
        _add_usage(usage, extra)
    if outcome.result is not None:
        response.result.CopyFrom(outcome.result)
    response.result.state = pb.TASK_STATE_FAILED if outcome.failed else pb.TASK_STATE_COMPLETED
    return response


def _add_usage(total: pb.Usage, usage: pb.Usage) -> None:
    total.prompt_tokens += usage.prompt_tokens
    total.completion_tokens += usage.completion_tokens
    total.total_tokens += usage.total_tokens
    total.cost_usd += usage.cost_usd
    if usage.model and not total.model:
        total.model = usage.model


__all__ = ["FanOut", "FanOutLimits"]
