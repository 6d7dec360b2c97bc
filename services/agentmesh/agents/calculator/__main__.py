"""``python -m agentmesh.agents.calculator``: serve the agent."""

from __future__ import annotations

from agentmesh.agents.calculator.agent import CalculatorAgent
from agentmesh.runtime import run

if __name__ == "__main__":
    run(CalculatorAgent())
