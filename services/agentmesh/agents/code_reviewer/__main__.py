"""``python -m agentmesh.agents.code_reviewer``: serve the agent."""

from __future__ import annotations

from agentmesh.agents.code_reviewer.agent import CodeReviewerAgent
from agentmesh.runtime import run

if __name__ == "__main__":
    run(CodeReviewerAgent())
