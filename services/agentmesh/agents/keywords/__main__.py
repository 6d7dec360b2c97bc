"""``python -m agentmesh.agents.keywords``: serve the agent."""

from __future__ import annotations

from agentmesh.agents.keywords.agent import KeywordsAgent
from agentmesh.runtime import run

if __name__ == "__main__":
    run(KeywordsAgent())
