"""``python -m agentmesh.agents.memory``: serve the agent."""

from __future__ import annotations

from agentmesh.agents.memory.agent import MemoryAgent
from agentmesh.runtime import run

if __name__ == "__main__":
    run(MemoryAgent())
