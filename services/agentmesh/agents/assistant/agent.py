"""The assistant service: a general assistant that streams the configured model's answer.

It has no offline mode: without a model every call is refused with
FAILED_PRECONDITION, saying which settings to set.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from agentmesh.agents._history import earlier_turns
from agentmesh.agents._model import ModelAgent, ModelOptions, SkillPrompt
from agentmesh.agents.assistant import logic
from agentmesh.llm import LLMClient
from agentmesh.runtime import AgentCard, Request, Skill, StreamItem


class AssistantAgent(ModelAgent):
    card = AgentCard(
        name="assistant",
        version="1.0.0",
        description="A general assistant backed by the configured language model "
        "(needs AGENTMESH_LLM_* settings); streams its answer.",
        skills=(
            Skill(
                id="chat",
                name="Chat",
                description="Answers the text. Earlier turns: a data part {history: [{role, "
                "content}]}. Options: temperature (0-2), max_tokens, model (one the agent "
                "allows). Metadata fills the prompt (persona, language).",
                tags=("llm", "chat", "assistant"),
                options=ModelOptions,
                examples=("Explain what a circuit breaker does in two sentences.",),
            ),
        ),
        takes_history=True,
    )
    prompts = {"chat": SkillPrompt(logic.ROLE_PROMPT, "${text}", logic.PROMPT_DEFAULTS)}

    async def with_model(self, request: Request, llm: LLMClient) -> AsyncIterator[StreamItem]:
        text = request.require_text(max_chars=logic.MAX_MESSAGE_CHARS)
        earlier = earlier_turns(request.message)
        chat = self.chat(request, earlier=earlier, text=text)
        async for item in self.stream_answer(request, llm, chat):
            yield item
