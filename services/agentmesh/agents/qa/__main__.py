"""``python -m agentmesh.agents.qa``: serve the agent."""

from __future__ import annotations

from agentmesh.agents.qa.agent import QAAgent
from agentmesh.runtime import run

if __name__ == "__main__":
    run(QAAgent())
