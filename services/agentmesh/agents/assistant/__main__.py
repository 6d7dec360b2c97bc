"""``python -m agentmesh.agents.assistant``: serve the agent."""

from __future__ import annotations

from agentmesh.agents.assistant.agent import AssistantAgent
from agentmesh.runtime import run

if __name__ == "__main__":
    run(AssistantAgent())
