"""Targets: what a unit of work names, the same everywhere a target is accepted.

``NAME`` (an agent), ``NAME/SKILL``, ``skill:SKILL`` (any agent offering it),
``workflow:NAME`` (a declared workflow) or nothing (the declared routes
choose). On the wire a target travels in ``InvokeRequest.agent`` (with
``skill`` beside it when the target names none), so clients that set agent
and skill separately keep working.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agentmesh.runtime.errors import InvalidInput
from agentmesh.v1 import gateway_pb2

WORKFLOW_PREFIX = "workflow:"
SKILL_PREFIX = "skill:"


@dataclass(frozen=True, slots=True)
class Target:
    agent: str = ""
    skill: str = ""
    workflow: str = ""

    @property
    def routed(self) -> bool:
        """Names nothing: the declared routes (or router agent, or default route) choose."""
        return not (self.agent or self.skill or self.workflow)

    def __str__(self) -> str:
        if self.workflow:
            return WORKFLOW_PREFIX + self.workflow
        if self.agent:
            return self.agent + (f"/{self.skill}" if self.skill else "")
        return SKILL_PREFIX + self.skill if self.skill else "(routed)"


def parse_target(agent: str, skill: str = "", *, field: str = "agent") -> Target:
    """The target in an ``agent`` field (any form above) and a ``skill`` field beside it."""
    if agent.startswith(WORKFLOW_PREFIX):
        name = agent.removeprefix(WORKFLOW_PREFIX)
        if not name:
            raise InvalidInput(field, "workflow: must be followed by a workflow name")
        if skill:
            raise InvalidInput("skill", "a workflow target takes no skill")
        return Target(workflow=name)
    if agent.startswith(SKILL_PREFIX):
        named = agent.removeprefix(SKILL_PREFIX)
        if skill and skill != named:
            raise InvalidInput("skill", f"differs from the target's skill {named!r}")
        return Target(skill=named)
    if "/" in agent:
        name, _, named = agent.partition("/")
        if skill and skill != named:
            raise InvalidInput("skill", f"differs from the target's skill {named!r}")
        return Target(agent=name, skill=named)
    return Target(agent=agent, skill=skill)


_FAN_OUT_KEYS = frozenset(
    {"targets", "skill", "policy", "quorum", "aggregation", "field", "aggregator", "max_width",
     "leg_timeout"}
)  # fmt: skip


def _enum(value: object, prefix: str, enum: Any, where: str) -> int:
    names = sorted(
        v.name.removeprefix(prefix).lower()
        for v in enum.DESCRIPTOR.values
        if not v.name.endswith("_UNSPECIFIED")
    )
    if not isinstance(value, str) or value.lower() not in names:
        raise InvalidInput(where, f"one of {', '.join(names)}")
    return int(enum.Value(prefix + value.upper()))


def _leg(value: object, where: str) -> gateway_pb2.Target:
    if isinstance(value, str):
        target = parse_target(value, field=where)
    elif isinstance(value, Mapping) and set(value) <= {"agent", "skill"}:
        target = parse_target(str(value.get("agent", "")), str(value.get("skill", "")), field=where)
    else:
        raise InvalidInput(where, "a target: NAME, NAME/SKILL, skill:SKILL or {agent, skill}")
    if target.workflow:
        raise InvalidInput(where, "a fan-out leg calls an agent, not a workflow")
    return gateway_pb2.Target(agent=target.agent, skill=target.skill)


def fan_out_from_spec(spec: Mapping[str, Any], *, where: str) -> gateway_pb2.FanOutRequest:
    """A FanOutRequest (without message) from its fields as written in YAML: ``targets``
    (a list of targets), ``skill``, ``policy`` (all, quorum, first), ``quorum``,
    ``aggregation`` (collect, first_success, majority, best_score, merge, reduce),
    ``field``, ``aggregator`` (a target), ``max_width``, ``leg_timeout`` (seconds)."""
    unknown = sorted(set(spec) - _FAN_OUT_KEYS)
    if unknown:
        raise InvalidInput(
            f"{where}.{unknown[0]}", f"unknown; known: {', '.join(sorted(_FAN_OUT_KEYS))}"
        )
    request = gateway_pb2.FanOutRequest()
    targets = spec.get("targets", [])
    if not isinstance(targets, list):
        raise InvalidInput(f"{where}.targets", "a list of targets")
    for i, leg in enumerate(targets):
        request.targets.append(_leg(leg, f"{where}.targets[{i}]"))
    for key in ("skill", "field"):
        value = spec.get(key, "")
        if not isinstance(value, str):
            raise InvalidInput(f"{where}.{key}", "a string")
        setattr(request, key, value)
    if "policy" in spec:
        request.policy = _enum(  # type: ignore[assignment]
            spec["policy"], "PARTIAL_POLICY_", gateway_pb2.PartialPolicy, f"{where}.policy"
        )
    if "aggregation" in spec:
        request.aggregation = _enum(  # type: ignore[assignment]
            spec["aggregation"], "AGGREGATION_", gateway_pb2.Aggregation, f"{where}.aggregation"
        )
    if "aggregator" in spec:
        request.aggregator.CopyFrom(_leg(spec["aggregator"], f"{where}.aggregator"))
    for key in ("quorum", "max_width"):
        value = spec.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InvalidInput(f"{where}.{key}", "a whole number, 0 or more")
        setattr(request, key, value)
    timeout = spec.get("leg_timeout", 0)
    if not isinstance(timeout, int | float) or not math.isfinite(timeout) or timeout < 0:
        raise InvalidInput(f"{where}.leg_timeout", "seconds, 0 or more")
    request.leg_timeout_seconds = float(timeout)
    if not request.targets and not request.skill:
        raise InvalidInput(
            f"{where}.targets", "name the legs, or set skill to call every agent offering it"
        )
    return request


__all__ = [
    "SKILL_PREFIX",
    "WORKFLOW_PREFIX",
    "Target",
    "fan_out_from_spec",
    "parse_target",
]
