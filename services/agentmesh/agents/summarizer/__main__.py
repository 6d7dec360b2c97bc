"""``python -m agentmesh.agents.summarizer``: serve the agent."""

from __future__ import annotations

from agentmesh.agents.summarizer.agent import SummarizerAgent
from agentmesh.runtime import run

if __name__ == "__main__":
    run(SummarizerAgent())
