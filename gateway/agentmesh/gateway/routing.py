"""Choosing the agent that serves a request: by name, skill, declared rules or a router agent."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentmesh.gateway.config import (
    AGENT_NAME,
    CacheConfig,
    GatewayConfig,
    RouteConfig,
    TargetConfig,
)
from agentmesh.gateway.registry import AgentEntry, Reachability, Registry
from agentmesh.gateway.targets import Target, fan_out_from_spec, parse_target
from agentmesh.runtime.errors import (
    AgentError,
    FailedPrecondition,
    InvalidInput,
    NotFound,
    Reason,
)
from agentmesh.runtime.types import Result
from agentmesh.runtime.wire import result_from_proto, struct_to_dict
from agentmesh.v1 import gateway_pb2
from agentmesh.v1 import messages_pb2 as pb

if TYPE_CHECKING:
    from agentmesh.gateway.upstream import Upstream

MAX_SKILL_CHARS = 128


def route(registry: Registry, agent: str, skill: str) -> AgentEntry:
    """The agent for a request naming ``agent`` and/or ``skill``.

    By name: that agent (NOT_FOUND when unknown, or when its card is known and
    lacks the skill). By skill alone: an agent offering it, preferring ones
    that answered last time, round-robin among equals.
    """
    if len(skill) > MAX_SKILL_CHARS:
        raise InvalidInput("skill", f"longer than {MAX_SKILL_CHARS} characters")
    if agent:
        entry = registry.get(agent)
        if entry is None:
            # Only a miss pays for the pattern check: registered names are valid.
            if not AGENT_NAME.match(agent):
                raise InvalidInput(
                    "agent", "must be lower-case letters, digits and '-' (at most 63)"
                )
            known = ", ".join(sorted(e.name for e in registry.entries)) or "none"
            raise NotFound(
                f"agent {agent!r} is not registered; registered agents: {known}",
                reason=Reason.AGENT_NOT_FOUND,
            )
        if skill and entry.card is not None and skill not in entry.skills:
            offered = ", ".join(sorted(entry.skills))
            raise NotFound(
                f"agent {agent!r} has no skill {skill!r}; it offers: {offered}",
                reason=Reason.SKILL_NOT_FOUND,
            )
        return entry
    if skill:
        candidates = registry.with_skill(skill)
        if not candidates:
            skills = sorted({s for e in registry.entries for s in e.skills})
            raise NotFound(
                f"no registered agent offers skill {skill!r}; known skills: "
                + (", ".join(skills) or "none"),
                reason=Reason.SKILL_NOT_FOUND,
            )
        serving = [
            e
            for e in candidates
            if e.reachability is not Reachability.UNAVAILABLE and not e.draining
        ]
        pool = serving or candidates
        return min(pool, key=lambda e: e.picks)  # least recently picked first
    raise InvalidInput("agent", "set agent or skill to say which agent should answer")


# Text beyond this is not scanned by route patterns: a request's size must not
# decide how long routing takes.
MATCH_TEXT_CHARS = 64 * 1024


@dataclass(frozen=True, slots=True)
class Selection:
    """Where a request goes (an agent and skill, a declared workflow, or a fan-out), how
    that was decided, and its caching."""

    entry: AgentEntry | None  # None for a workflow or a fan-out
    skill: str
    route: str  # "agent", "skill", "workflow", a declared route's name, "router" or "default"
    cache: CacheConfig | None = None
    workflow: str = ""
    fan_out: gateway_pb2.FanOutRequest | None = None
    history: bool = True  # False: a declared route that keeps no sessions
    session: Mapping[str, Any] | None = None  # a declared route's session overrides

    @property
    def agent(self) -> AgentEntry:
        """The agent selected (only for a selection that is neither workflow nor fan-out)."""
        assert self.entry is not None, "a workflow or fan-out selection has no agent"
        return self.entry


@dataclass(frozen=True, slots=True)
class _Rule:
    config: RouteConfig
    keywords: re.Pattern[str] | None
    pattern: re.Pattern[str] | None
    fan_out: gateway_pb2.FanOutRequest | None  # compiled once from ``to.fan_out``

    def matches(self, text: str, metadata: dict[str, Any]) -> bool:
        match = self.config.match
        if any(metadata.get(k) != v for k, v in match.metadata.items()):
            return False
        if self.keywords is not None and not self.keywords.search(text):
            return False
        return self.pattern is None or self.pattern.search(text) is not None


class Router:
    """Routes requests by name, skill, declared rules, a router agent, or the default route.

    A request naming an agent or a skill goes there. One naming neither is
    matched against the declared routes (highest priority first); if none
    matches, the router agent (when declared) is asked, and its answer (data
    ``{"agent": ..., "skill": ...}`` or text ``AGENT`` / ``AGENT/SKILL``) is
    used; otherwise the default route.
    """

    def __init__(self, registry: Registry, upstream: Upstream, config: GatewayConfig) -> None:
        self.registry = registry
        self._upstream = upstream
        self._config = config
        ordered = sorted(config.routes, key=lambda r: -r.priority)  # stable: file order on ties
        self._rules = [_compile(rule) for rule in ordered]

    @property
    def has_rules(self) -> bool:
        return bool(self._rules or self._config.router or self._config.default_route)

    async def select(self, request: pb.InvokeRequest, *, time_remaining: float | None) -> Selection:
        target = parse_target(request.agent, request.skill)
        if not target.routed:
            return self._target(target, "agent" if target.agent else "skill", None)
        if not self.has_rules:
            raise InvalidInput("agent", "set agent or skill to say which agent should answer")
        text = _text_of(request.message)
        metadata = struct_to_dict(request.message.metadata) if request.message.metadata else {}
        for rule in self._rules:
            if rule.matches(text, metadata):
                if rule.fan_out is not None:
                    return Selection(None, "", rule.config.name, fan_out=rule.fan_out)
                selection = self._target(rule.config.to.target, rule.config.name, rule.config.cache)
                if rule.config.history and rule.config.session is None:
                    return selection
                return dataclasses.replace(
                    selection,
                    history=rule.config.history,
                    session=rule.config.session.overrides() if rule.config.session else None,
                )
        if self._config.router is not None:
            return await self._ask_router(self._config.router, request, time_remaining)
        if self._config.default_route is not None:
            return self._target(self._config.default_route.target, "default", None)
        raise InvalidInput(
            "agent",
            "no declared route matched; set agent or skill to say which agent should answer",
        )

    def _target(self, target: Target, how: str, cache: CacheConfig | None) -> Selection:
        if target.workflow:
            return Selection(
                None, "", "workflow" if how == "agent" else how, workflow=target.workflow
            )
        entry = route(self.registry, target.agent, target.skill)
        return Selection(entry, target.skill, how, cache or _agent_cache(entry, target.skill))

    async def _ask_router(
        self, router: TargetConfig, request: pb.InvokeRequest, time_remaining: float | None
    ) -> Selection:
        entry = route(self.registry, router.agent, router.skill)
        ask = pb.InvokeRequest(agent=entry.name, skill=router.skill, message=request.message)
        answer = await self._upstream.invoke(entry, ask, time_remaining=time_remaining)
        agent, skill = _router_choice(result_from_proto(answer))
        if not agent and not skill:
            raise FailedPrecondition(
                f"router agent {entry.name!r} gave no target: it must answer data "
                '{"agent": ..., "skill": ...} or text AGENT, AGENT/SKILL or workflow:NAME'
            )
        try:
            return self._target(parse_target(agent, skill), "router", None)
        except AgentError as exc:
            raise FailedPrecondition(
                f"router agent {entry.name!r} chose an unusable target: {exc.message}"
            ) from None


def addressed(request: pb.InvokeRequest, selection: Selection) -> pb.InvokeRequest:
    """``request`` naming the selected agent and skill (a copy only when they differ)."""
    name = selection.agent.name
    if request.agent == name and request.skill == selection.skill:
        return request
    forwarded = pb.InvokeRequest()
    forwarded.CopyFrom(request)
    forwarded.agent, forwarded.skill = name, selection.skill
    return forwarded


def _compile(rule: RouteConfig) -> _Rule:
    keywords = None
    if rule.match.keywords:
        words = "|".join(re.escape(k) for k in rule.match.keywords)
        keywords = re.compile(rf"(?<!\w)(?:{words})(?!\w)", re.IGNORECASE)
    pattern = re.compile(rule.match.pattern) if rule.match.pattern else None
    fan_out = rule.to.fan_out
    compiled = None if fan_out is None else fan_out_from_spec(fan_out, where=f"{rule.name}.to")
    return _Rule(rule, keywords, pattern, compiled)


def _text_of(message: pb.Message) -> str:
    text = "\n".join(p.text for p in message.parts if p.WhichOneof("content") == "text")
    return text[:MATCH_TEXT_CHARS]


def _agent_cache(entry: AgentEntry, skill: str) -> CacheConfig | None:
    cache = entry.config.cache
    if cache is None or (cache.skills and skill not in cache.skills):
        return None
    return cache


def _router_choice(result: Result) -> tuple[str, str]:
    data = result.data
    if isinstance(data, dict):
        agent, skill = data.get("agent", ""), data.get("skill", "")
        return (agent if isinstance(agent, str) else "", skill if isinstance(skill, str) else "")
    agent, _, skill = result.text.strip().partition("/")
    return agent.strip(), skill.strip()
