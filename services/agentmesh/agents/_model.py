"""LLM mode of the reference agents: the model client, role prompts, usage.

An agent built on :class:`ModelAgent` works offline unless a model is
configured. At startup it reads the ``AGENTMESH_LLM_*`` settings (tests hand
it an :class:`~agentmesh.llm.LLMClient` instead); with no provider there it
keeps its offline algorithm.

Role prompts are templates (``${name}`` placeholders, see
:func:`agentmesh.llm.render_prompt`) filled, in increasing precedence, from
the agent's defaults, the request's metadata (top-level keys with a string,
number or boolean value) and the values the agent derives from the request's
options. ``AGENTMESH_LLM_PROMPTS`` replaces an agent's built-in template.

A model answer reports its usage in ``Result.usage`` and, with the provider
that answered and every provider tried, under ``"llm"`` in the result's
metadata. Provider failures reach the caller as the statuses of
:func:`agentmesh.llm.to_agent_error`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import ClassVar, TypeVar

from pydantic import BaseModel, Field, ValidationError

from agentmesh.llm import (
    ChatRequest,
    ChatResponse,
    LLMClient,
    LLMSettings,
    Message,
    NotConfiguredError,
    PromptTemplateError,
    ProviderError,
    StructuredOutputError,
    complete_json,
    render_prompt,
    to_agent_error,
)
from agentmesh.llm import Usage as ModelUsage
from agentmesh.runtime import (
    Agent,
    FailedPrecondition,
    InvalidInput,
    Request,
    Result,
    StreamItem,
    Usage,
)
from agentmesh.runtime.types import JSONValue

log = logging.getLogger("agentmesh.agents")

SchemaT = TypeVar("SchemaT", bound=BaseModel)

#: Longest metadata value accepted as a prompt variable, in characters.
MAX_VARIABLE_CHARS = 2_000
#: Upper bound of the ``max_tokens`` option.
MAX_COMPLETION_TOKENS = 32_768


class ModelOptions(BaseModel):
    """The options every model-backed skill takes (they matter only in LLM mode)."""

    temperature: float | None = Field(
        None, ge=0.0, le=2.0, description="sampling temperature (LLM mode)"
    )
    max_tokens: int | None = Field(
        None, ge=1, le=MAX_COMPLETION_TOKENS, description="longest answer in tokens (LLM mode)"
    )


def prompt_variables(request: Request) -> dict[str, str]:
    """The request metadata usable in a role prompt: scalar values under identifier keys."""
    variables: dict[str, str] = {}
    for key, value in request.message.metadata.items():
        if not key.isidentifier() or isinstance(value, dict | list) or value is None:
            continue
        text = str(value).lower() if isinstance(value, bool) else str(value)
        if len(text) > MAX_VARIABLE_CHARS:
            raise InvalidInput(
                f"message.metadata.{key}",
                f"{len(text)} characters; a prompt variable may have {MAX_VARIABLE_CHARS}",
            )
        variables[key] = text
    return variables


def result_usage(response: ChatResponse) -> Usage:
    """The runtime's usage record of a model answer (cost 0 when no price is known)."""
    usage = response.usage
    return Usage(
        usage.prompt_tokens, usage.completion_tokens, usage.cost_usd or 0.0, response.model
    )


def result_metadata(response: ChatResponse) -> dict[str, JSONValue]:
    """What the caller learns about the model call, under the ``"llm"`` key."""
    usage = response.usage
    return {
        "llm": {
            "provider": response.provider,
            "model": response.model,
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
            "cost_usd": usage.cost_usd,
            "estimated": usage.estimated,
            "finish_reason": response.finish_reason,
            "attempts": [
                {
                    "provider": a.provider,
                    "model": a.model,
                    "outcome": a.outcome,
                    "tries": a.tries,
                    "status": a.status,
                    "error": a.error,
                }
                for a in response.attempts
            ],
        }
    }


def model_result(response: ChatResponse, *, text: str, data: JSONValue | None = None) -> Result:
    """A result carrying ``text`` and ``data`` with the usage and metadata of ``response``."""
    return Result.of(
        text=text, data=data, usage=result_usage(response), metadata=result_metadata(response)
    )


class ModelAgent(Agent):
    """An agent with an offline algorithm and an LLM mode.

    Subclasses set ``role_prompt`` (and ``prompt_defaults`` for its
    placeholders) and implement :meth:`offline` and :meth:`with_model`. Both
    unary and streaming calls go through :meth:`stream`.
    """

    role_prompt: ClassVar[str]
    prompt_defaults: ClassVar[Mapping[str, str]] = {}

    def __init__(self, llm: LLMClient | None = None, *, role_prompt: str | None = None) -> None:
        self._llm = llm
        self._owns_llm = False
        self._role_prompt = role_prompt if role_prompt is not None else type(self).role_prompt

    @property
    def llm(self) -> LLMClient | None:
        """The model client, or None in offline mode."""
        return self._llm if self._llm is not None and self._llm.configured else None

    async def startup(self) -> None:
        if self._llm is not None:
            return
        try:
            settings = LLMSettings()
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}"
                for e in exc.errors(include_input=False, include_url=False)
            )
            raise SystemExit(
                f"{self.card.name}: invalid AGENTMESH_LLM_* settings: {problems}"
            ) from None
        self._llm = LLMClient(settings)
        self._owns_llm = True
        self._role_prompt = settings.prompts.get(self.card.name, self._role_prompt)
        if settings.configured:
            names = [p.name for p in settings.providers]
            log.info("LLM mode", extra={"providers": names})
        else:
            log.info("offline mode: no LLM provider configured")

    async def shutdown(self) -> None:
        if self._owns_llm and self._llm is not None:
            await self._llm.aclose()

    # -- the handler ---------------------------------------------------------------------------

    async def stream(self, request: Request) -> AsyncIterator[StreamItem]:
        llm = self.llm
        try:
            if llm is None:
                yield await self.offline(request)
                return
            async for item in self.with_model(request, llm):
                yield item
        except (ProviderError, StructuredOutputError) as exc:
            raise to_agent_error(exc) from None

    async def offline(self, request: Request) -> Result:
        """The answer without a model. Default: FAILED_PRECONDITION (a model is needed)."""
        raise FailedPrecondition(
            f"agent {self.card.name!r} needs a language model and {NotConfiguredError().message}"
        )

    def with_model(self, request: Request, llm: LLMClient) -> AsyncIterator[StreamItem]:
        """The answer with a model: text deltas, then the final Result."""
        raise NotImplementedError

    # -- helpers for subclasses ----------------------------------------------------------------

    def system_prompt(self, request: Request, **values: str) -> str:
        """The role prompt rendered for ``request``; ``values`` win over metadata."""
        variables = {
            "agent": self.card.name,
            "skill": request.skill,
            **self.prompt_defaults,
            **prompt_variables(request),
            **values,
        }
        try:
            return render_prompt(self._role_prompt, variables)
        except PromptTemplateError as exc:
            raise InvalidInput("message.metadata", f"role prompt: {exc}") from None

    def chat(
        self, request: Request, user: str, *, earlier: Sequence[Message] = (), **values: str
    ) -> ChatRequest:
        """A chat request: the role prompt (``values`` fill placeholders), the ``earlier``
        turns and ``user``, with the request's ``temperature`` and ``max_tokens`` options."""
        temperature = (
            request.float_option("temperature", 0.0, minimum=0.0, maximum=2.0)
            if "temperature" in request.options
            else None
        )
        max_tokens = (
            request.int_option("max_tokens", 1, minimum=1, maximum=MAX_COMPLETION_TOKENS)
            if "max_tokens" in request.options
            else None
        )
        system = Message.system(self.system_prompt(request, **values))
        return ChatRequest(
            messages=(system, *earlier, Message.user(user)),
            temperature=temperature,
            max_tokens=max_tokens,
        )

    async def stream_answer(
        self,
        request: Request,
        llm: LLMClient,
        chat: ChatRequest,
        *,
        data: Callable[[str], JSONValue] | None = None,
    ) -> AsyncIterator[StreamItem]:
        """The model's text deltas as they arrive, then the Result (with ``data(text)``)."""
        parts: list[str] = []
        async for chunk in llm.stream(chat, deadline=request.deadline):
            if not chunk.final:
                parts.append(chunk.text)
                yield chunk.text
                continue
            text = "".join(parts)
            response = ChatResponse(
                text=text,
                model=chunk.model,
                provider=chunk.provider,
                finish_reason=chunk.finish_reason,
                usage=chunk.usage or ModelUsage.estimate("", text),
                attempts=chunk.attempts,
            )
            yield model_result(response, text=text, data=data(text) if data else None)

    async def ask_json(
        self, request: Request, llm: LLMClient, chat: ChatRequest, schema: type[SchemaT]
    ) -> tuple[SchemaT, ChatResponse]:
        """A reply validated against ``schema`` (one repair request if needed)."""
        return await complete_json(llm, chat, schema, deadline=request.deadline)
