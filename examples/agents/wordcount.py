# examples/agents/wordcount.py
from __future__ import annotations

import collections

from pydantic import BaseModel, Field

from agentmesh.runtime import Agent, AgentCard, Request, Result, Skill, run


class CountOptions(BaseModel):
    """What the count skill takes; its JSON Schema goes on the card."""

    top: int = Field(5, ge=1, le=50, description="how many of the most common words")


class WordCounter(Agent):
    card = AgentCard(
        name="word-counter",
        version="1.0.0",
        description="Counts words and reports the most common ones.",
        skills=(
            Skill(
                id="count",
                name="Count words",
                description="Option: top (1-50, default 5).",
                tags=("text",),
                examples=("How often does each word appear?",),
                options=CountOptions,  # any other option is refused before invoke runs
            ),
        ),
    )

    async def invoke(self, request: Request) -> Result:
        text = request.require_text(max_chars=100_000)  # INVALID_ARGUMENT if empty or too long
        top = request.int_option("top", 5, minimum=1, maximum=50)  # names options.top when bad
        words = collections.Counter(w.lower() for w in text.split())
        common = words.most_common(top)
        return Result.of(
            text=", ".join(f"{w} ({n})" for w, n in common),
            data={
                "total": sum(words.values()),
                "top": [{"word": w, "count": n} for w, n in common],
            },
        )


if __name__ == "__main__":
    run(WordCounter())
