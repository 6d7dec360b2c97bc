"""The sentiment service: lexicon polarity with negation and intensifiers."""

from __future__ import annotations

from pydantic import BaseModel

from agentmesh.agents.sentiment import logic
from agentmesh.runtime import Agent, AgentCard, Request, Result, Skill, offload


class NoOptions(BaseModel):
    """The skill takes no options."""


class SentimentAgent(Agent):
    card = AgentCard(
        name="sentiment",
        version="1.0.0",
        description="Sentiment polarity (-1..1) of a text and of each sentence.",
        skills=(
            Skill(
                id="sentiment",
                name="Sentiment",
                description="Label (positive, negative, neutral), score and per-sentence scores.",
                tags=("text", "sentiment", "classification"),
                options=NoOptions,
                examples=("The food was not good, but the staff were very friendly.",),
            ),
        ),
    )

    async def invoke(self, request: Request) -> Result:
        text = request.require_text(max_chars=logic.MAX_TEXT_CHARS)
        report = await offload(logic.analyze, text)
        return Result.of(text=f"{report.label} ({report.score:+.3f})", data=report.to_dict())
