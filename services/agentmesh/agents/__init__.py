"""The reference agents, one service each: ``python -m agentmesh.agents.MODULE``."""

from __future__ import annotations

#: Agent name -> module that serves it. The local runner, the deploy manifests'
#: consistency test and the docs all read this one table.
REFERENCE_AGENTS: dict[str, str] = {
    "summarizer": "agentmesh.agents.summarizer",
    "sentiment": "agentmesh.agents.sentiment",
    "keywords": "agentmesh.agents.keywords",
    "calculator": "agentmesh.agents.calculator",
    "code-reviewer": "agentmesh.agents.code_reviewer",
    "qa": "agentmesh.agents.qa",
    "assistant": "agentmesh.agents.assistant",
    "memory": "agentmesh.agents.memory",
}
