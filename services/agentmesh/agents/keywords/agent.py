"""The keywords service: RAKE keyphrases and pattern-matched entities."""

from __future__ import annotations

from pydantic import BaseModel, Field

from agentmesh.agents.keywords import logic
from agentmesh.runtime import Agent, AgentCard, Request, Result, Skill, offload


class KeywordsOptions(BaseModel):
    """Options of the keywords skill."""

    max_keywords: int = Field(
        10, ge=1, le=logic.MAX_KEYWORDS, description="most keyphrases returned"
    )


class NoOptions(BaseModel):
    """The skill takes no options."""


class KeywordsAgent(Agent):
    card = AgentCard(
        name="keywords",
        version="1.0.0",
        description="Keyphrases (RAKE) and entities: emails, URLs, dates, money, numbers.",
        skills=(
            Skill(
                id="keywords",
                name="Keywords and entities",
                description="Option: max_keywords (1-100, default 10).",
                tags=("text", "keywords", "extraction"),
                options=KeywordsOptions,
            ),
            Skill(
                id="entities",
                name="Entities",
                description="Emails, URLs, dates, amounts of money, percentages and numbers.",
                tags=("text", "entities", "extraction"),
                options=NoOptions,
            ),
        ),
    )

    async def invoke(self, request: Request) -> Result:
        text = request.require_text(max_chars=logic.MAX_TEXT_CHARS)
        if request.skill == "entities":
            entities = await offload(logic.extract_entities, text)
            lines = [f"{e.kind}: {e.text}" for e in entities]
            return Result.of(
                text="\n".join(lines), data={"entities": [e.to_dict() for e in entities]}
            )
        limit = request.int_option("max_keywords", 10, minimum=1, maximum=logic.MAX_KEYWORDS)
        report = await offload(logic.analyze, text, max_keywords=limit)
        return Result.of(text=", ".join(k.text for k in report.keywords), data=report.to_dict())
