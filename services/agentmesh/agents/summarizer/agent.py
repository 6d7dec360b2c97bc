"""The summarizer service: extractive summaries by TextRank, or the model's when configured."""

from __future__ import annotations

from collections.abc import AsyncIterator

from pydantic import Field

from agentmesh.agents._model import ModelAgent, ModelOptions, SkillPrompt
from agentmesh.agents.summarizer import logic
from agentmesh.llm import LLMClient
from agentmesh.runtime import AgentCard, Request, Result, Skill, StreamItem, offload
from agentmesh.runtime.types import JSONValue

ROLE_PROMPT = (
    "You are ${agent}, a careful summarizer. Summarize the user's text in at most "
    "${sentences} sentences for ${audience}, in ${language}. Use only facts stated in the "
    "text; no introduction, no opinions."
)


class SummarizeOptions(ModelOptions):
    """Options of the summarize skill."""

    sentences: int = Field(
        3, ge=1, le=logic.MAX_SENTENCES, description="most sentences in the summary"
    )
    ratio: float | None = Field(
        None, ge=1e-6, le=1.0, description="keep this fraction of the sentences instead"
    )


class SummarizerAgent(ModelAgent):
    card = AgentCard(
        name="summarizer",
        version="1.0.0",
        description="Summaries: the text's most central sentences, in order (TextRank), or "
        "the configured model's abstractive summary.",
        skills=(
            Skill(
                id="summarize",
                name="Summarize",
                description="Options: sentences (1-50, default 3) or ratio (0-1].",
                tags=("text", "summary"),
                options=SummarizeOptions,
                examples=("Summarize this article in two sentences.",),
            ),
        ),
    )
    prompts = {
        "summarize": SkillPrompt(
            ROLE_PROMPT,
            "${text}",
            {"audience": "a general reader", "language": "the language of the text"},
            supplied=frozenset({"text", "sentences"}),
        )
    }

    async def _extract(self, request: Request) -> tuple[str, logic.Summary]:
        text = request.require_text(max_chars=logic.MAX_TEXT_CHARS)
        sentences = request.int_option("sentences", 3, minimum=1, maximum=logic.MAX_SENTENCES)
        ratio = (
            request.float_option("ratio", 1.0, minimum=1e-6, maximum=1.0)
            if "ratio" in request.options
            else None
        )
        summary = await offload(logic.summarize, text, max_sentences=sentences, ratio=ratio)
        return text, summary

    async def offline(self, request: Request) -> Result:
        _, summary = await self._extract(request)
        return Result.of(text=summary.summary, data=summary.to_dict())

    async def with_model(self, request: Request, llm: LLMClient) -> AsyncIterator[StreamItem]:
        # The extractive pass validates the options and turns sentences/ratio into
        # one sentence budget; its result is returned alongside the model's.
        text, extractive = await self._extract(request)
        budget = max(1, len(extractive.sentences))
        chat = self.chat(request, text=text, sentences=str(budget))

        def data(summary: str) -> JSONValue:
            return {
                "summary": summary,
                "sentence_budget": budget,
                "sentence_count": extractive.sentence_count,
                "extractive": extractive.to_dict(),
            }

        async for item in self.stream_answer(request, llm, chat, data=data):
            yield item
