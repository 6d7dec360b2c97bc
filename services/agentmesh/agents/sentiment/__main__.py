"""``python -m agentmesh.agents.sentiment``: serve the agent."""

from __future__ import annotations

from agentmesh.agents.sentiment.agent import SentimentAgent
from agentmesh.runtime import run

if __name__ == "__main__":
    run(SentimentAgent())
