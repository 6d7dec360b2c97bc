"""The code-reviewer service: static review of Python source through ``ast``."""

from __future__ import annotations

import asyncio

from agentmesh.agents.code_reviewer import logic
from agentmesh.runtime import Agent, AgentCard, Request, Result, Skill


class CodeReviewerAgent(Agent):
    card = AgentCard(
        name="code-reviewer",
        version="1.0.0",
        description="Reviews Python source without running it: complexity and security smells.",
        skills=(
            Skill(
                id="review",
                name="Review Python",
                description="Findings with line, severity and rule; complexity per function. "
                "Option: filename.",
                tags=("code", "python", "security", "review"),
                examples=("x = eval(input())",),
                input_modes=("text/x-python", "text/plain"),
            ),
        ),
    )

    async def invoke(self, request: Request) -> Result:
        source = request.require_text(max_chars=logic.MAX_SOURCE_BYTES)
        filename = request.str_option("filename", "<input>")
        review = await asyncio.to_thread(logic.review, source, filename=filename)
        lines = [
            f"{review.filename}:{f.line}:{f.col}: {f.severity} [{f.rule}] {f.message}"
            for f in review.findings
        ]
        lines.append(
            f"{len(review.findings)} findings; highest severity: {review.max_severity or 'none'}"
        )
        return Result.of(text="\n".join(lines), data=review.to_dict())
