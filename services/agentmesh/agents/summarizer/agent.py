"""The summarizer service: extractive summaries by TextRank."""

from __future__ import annotations

import asyncio

from agentmesh.agents.summarizer import logic
from agentmesh.runtime import Agent, AgentCard, Request, Result, Skill


class SummarizerAgent(Agent):
    card = AgentCard(
        name="summarizer",
        version="1.0.0",
        description="Extractive summaries: the text's most central sentences, in order.",
        skills=(
            Skill(
                id="summarize",
                name="Summarize",
                description="Options: sentences (1-50, default 3) or ratio (0-1].",
                tags=("text", "summary"),
                examples=("Summarize this article in two sentences.",),
            ),
        ),
    )

    async def invoke(self, request: Request) -> Result:
        text = request.require_text(max_chars=logic.MAX_TEXT_CHARS)
        sentences = request.int_option("sentences", 3, minimum=1, maximum=logic.MAX_SENTENCES)
        ratio = (
            request.float_option("ratio", 1.0, minimum=1e-6, maximum=1.0)
            if "ratio" in request.options
            else None
        )
        summary = await asyncio.to_thread(
            logic.summarize, text, max_sentences=sentences, ratio=ratio
        )
        return Result.of(text=summary.summary, data=summary.to_dict())
