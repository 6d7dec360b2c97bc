"""The calculator service: arithmetic through a safe AST walker (never eval)."""

from __future__ import annotations

from pydantic import BaseModel

from agentmesh.agents.calculator import logic
from agentmesh.runtime import Agent, AgentCard, Request, Result, Skill


class NoOptions(BaseModel):
    """The skill takes no options."""


class CalculatorAgent(Agent):
    card = AgentCard(
        name="calculator",
        version="1.0.0",
        description="Exact arithmetic and common math functions, evaluated safely.",
        skills=(
            Skill(
                id="evaluate",
                name="Evaluate",
                description="+ - * / // % **, parentheses, pi, e, sqrt, log, sin, min, max, ...",
                tags=("math", "arithmetic"),
                options=NoOptions,
                examples=("2*(3+4)**2", "sqrt(2) * pi"),
            ),
        ),
    )

    async def invoke(self, request: Request) -> Result:
        # Bounded work (length, depth, digit count): cheap enough for the loop.
        expression = request.require_text(max_chars=logic.MAX_EXPRESSION_CHARS)
        calculation = logic.evaluate(expression.strip())
        return Result.of(text=calculation.text, data=calculation.to_dict())
