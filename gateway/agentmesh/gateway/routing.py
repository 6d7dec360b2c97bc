"""Choosing the agent that serves a request: by agent name or by skill."""

from __future__ import annotations

from agentmesh.gateway.config import AGENT_NAME
from agentmesh.gateway.registry import AgentEntry, Reachability, Registry
from agentmesh.runtime.errors import InvalidInput, NotFound

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
            raise NotFound(f"agent {agent!r} is not registered; registered agents: {known}")
        if skill and entry.card is not None and skill not in entry.skills:
            offered = ", ".join(sorted(entry.skills))
            raise NotFound(f"agent {agent!r} has no skill {skill!r}; it offers: {offered}")
        return entry
    if skill:
        candidates = registry.with_skill(skill)
        if not candidates:
            skills = sorted({s for e in registry.entries for s in e.skills})
            raise NotFound(
                f"no registered agent offers skill {skill!r}; known skills: "
                + (", ".join(skills) or "none")
            )
        serving = [e for e in candidates if e.reachability is not Reachability.UNAVAILABLE]
        pool = serving or candidates
        return min(pool, key=lambda e: e.picks)  # least recently picked first
    raise InvalidInput("agent", "set agent or skill to say which agent should answer")
