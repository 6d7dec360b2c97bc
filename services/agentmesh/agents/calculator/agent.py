"""The calculator service: arithmetic through a safe AST walker (never eval).

``solve`` takes an expression with variables (``x * rate + 2``) and asks for the value
of each one it does not know yet (``InputRequired("What is x?")``): as a job, each
ResumeJob answer (a number, or an expression of numbers) comes back as a history turn,
and the answers bind the variables in order of first appearance.
"""

from __future__ import annotations

from pydantic import BaseModel

from agentmesh.agents._history import earlier_turns
from agentmesh.agents.calculator import logic
from agentmesh.runtime import Agent, AgentCard, InputRequired, InvalidInput, Request, Result, Skill


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
            Skill(
                id="solve",
                name="Solve with variables",
                description="Like evaluate, but asks for the value of each unknown name "
                "(INPUT_REQUIRED 'What is x?', data {variable, expression}); run it as a job "
                "and answer with ResumeJob (a number or an expression).",
                tags=("math", "multi-turn"),
                options=NoOptions,
                examples=("price * quantity * (1 + rate)",),
            ),
        ),
    )

    async def invoke(self, request: Request) -> Result:
        # Bounded work (length, depth, digit count): cheap enough for the loop.
        expression = request.require_text(max_chars=logic.MAX_EXPRESSION_CHARS)
        if request.skill == "solve":
            return solve(expression.strip(), request)
        calculation = logic.evaluate(expression.strip())
        return Result.of(text=calculation.text, data=calculation.to_dict())


def solve(expression: str, request: Request) -> Result:
    """``expression`` with its variables bound by the answers so far, or the next question."""
    names = logic.variables_of(expression)
    answers = [turn.content for turn in earlier_turns(request.message) if turn.role == "user"]
    values: dict[str, logic.Number] = {}
    for name, answer in zip(names, answers, strict=False):
        try:
            values[name] = logic.evaluate(answer.strip()).value
        except InvalidInput as exc:
            raise InvalidInput(f"answer for {name}", exc.problem) from None
    if len(values) < len(names):
        missing = names[len(values)]
        raise InputRequired(
            f"What is {missing}?", data={"variable": missing, "expression": expression}
        )
    calculation = logic.evaluate(expression, variables=values)
    data = calculation.to_dict()
    data["variables"] = values
    return Result.of(text=calculation.text, data=data)
