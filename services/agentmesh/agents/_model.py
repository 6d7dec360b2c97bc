"""LLM mode of the reference agents: the model client, prompt templates, model choice, usage.

An agent built on :class:`ModelAgent` works offline unless a model is
configured. At startup it reads the ``AGENTMESH_LLM_*`` settings (tests hand
it an :class:`~agentmesh.llm.LLMClient` instead); with no provider there it
keeps its offline algorithm.

Each skill's prompt is a pair of templates (``${name}`` placeholders, see
:func:`agentmesh.llm.render_prompt`): the system message and the user's turn,
a :class:`SkillPrompt`. They are filled, in increasing precedence, from the
agent's defaults (with ``agent`` and ``skill``), the variables the
configuration declares, the request's metadata (top-level keys with a
string, number or boolean value) and the values the handler supplies (the
text, the summarizer's ``sentences``...). ``AGENTMESH_LLM_PROMPTS`` overrides
them per agent or per skill (``{"AGENT" or "AGENT/SKILL": template or
{system, system_file, user, user_file, variables}}``); a template naming a
placeholder nothing fills is refused when the agent loads it
(:class:`PromptConfigError`), never silently sent.

The ``model`` option picks one model of the allow-list
(``AGENTMESH_LLM_MODELS``) for that call; a name not on it is
INVALID_ARGUMENT naming it and listing the allowed ones.

A model answer reports its usage in ``Result.usage`` and, with the provider
that answered and every provider tried, under ``"llm"`` in the result's
metadata. Provider failures reach the caller as the statuses of
:func:`agentmesh.llm.to_agent_error`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

from pydantic import BaseModel, Field, ValidationError

from agentmesh.llm import (
    ChatRequest,
    ChatResponse,
    LLMClient,
    LLMSettings,
    Message,
    ModelNotAllowed,
    NotConfiguredError,
    PromptConfig,
    PromptTemplateError,
    ProviderError,
    StructuredOutputError,
    complete_json,
    placeholders,
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
    model: str | None = Field(
        None,
        max_length=64,
        description="the model of the agent's allow-list (AGENTMESH_LLM_MODELS) to answer "
        "this call; default: the configured chain",
    )


class PromptConfigError(ValueError):
    """A configured prompt the agent cannot use; the message names the key and the part."""


@dataclass(frozen=True, slots=True)
class SkillPrompt:
    """A skill's prompt: the system message and the user's turn, as templates.

    ``defaults`` fill placeholders the request's metadata may override
    (``audience``...); ``supplied`` are the values the handler gives each call
    (the text...). ``agent`` and ``skill`` are always known. ``required`` are
    declared variables the request's metadata must give.
    """

    system: str
    user: str = "${text}"
    defaults: Mapping[str, str] = field(default_factory=dict)
    supplied: frozenset[str] = frozenset({"text"})
    required: frozenset[str] = frozenset()

    @property
    def known(self) -> frozenset[str]:
        """The placeholders something fills."""
        return frozenset({"agent", "skill", *self.defaults, *self.supplied, *self.required})

    def check(self, where: Mapping[str, str]) -> None:
        """:class:`PromptConfigError` when a template names a placeholder nothing fills;
        ``where`` names the origin of each part (``system``, ``user``) in the message."""
        for part in ("system", "user"):
            try:
                names = placeholders(getattr(self, part))
            except PromptTemplateError as exc:
                raise PromptConfigError(f"{where[part]}: {part} template: {exc}") from None
            unknown = [n for n in dict.fromkeys(names) if n not in self.known]
            if unknown:
                raise PromptConfigError(
                    f"{where[part]}: {part} template: unknown placeholder(s) "
                    f"{', '.join(f'${{{n}}}' for n in unknown)} (known: "
                    f"{', '.join(sorted(self.known))}; declare one under variables to fill "
                    "it from the request's metadata)"
                )

    def overridden(self, config: str | PromptConfig) -> SkillPrompt:
        """This prompt with a configured override applied."""
        if isinstance(config, str):
            return dataclasses.replace(self, system=config)
        declared = {k: v for k, v in config.variables.items() if v is not None}
        required = {k for k, v in config.variables.items() if v is None}
        return SkillPrompt(
            system=config.system if config.system is not None else self.system,
            user=config.user if config.user is not None else self.user,
            defaults={**self.defaults, **declared},
            supplied=self.supplied,
            required=(self.required | required) - set(declared),
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

    Subclasses set ``prompts`` (each skill's :class:`SkillPrompt`, by skill
    id) and implement :meth:`offline` and :meth:`with_model`. Both unary and
    streaming calls go through :meth:`stream`. ``prompts=`` overrides them as
    ``AGENTMESH_LLM_PROMPTS`` does (keys ``AGENT`` or ``AGENT/SKILL``).
    """

    prompts: ClassVar[Mapping[str, SkillPrompt]]

    def __init__(
        self,
        llm: LLMClient | None = None,
        *,
        prompts: Mapping[str, str | PromptConfig] | None = None,
    ) -> None:
        self._llm = llm
        self._owns_llm = False
        self._prompts = self.configured_prompts(prompts or {})

    def configured_prompts(
        self, overrides: Mapping[str, str | PromptConfig]
    ) -> dict[str, SkillPrompt]:
        """Each skill's prompt with the ``overrides`` for this agent applied (an agent-wide
        key first, then a skill's own), checked: :class:`PromptConfigError` otherwise."""
        name = self.card.name
        skills = [s.id for s in self.card.skills]
        prompts = {skill: type(self).prompts[skill] for skill in skills}
        origins = {
            skill: {part: f"the built-in prompt of skill {skill!r}" for part in ("system", "user")}
            for skill in skills
        }
        mine = [(k, v) for k, v in overrides.items() if k.partition("/")[0] == name]
        for key, config in sorted(mine, key=lambda item: "/" in item[0]):
            skill = key.partition("/")[2]
            if skill and skill not in prompts:
                raise PromptConfigError(
                    f"prompts[{key!r}]: agent {name!r} has no skill {skill!r} "
                    f"(skills: {', '.join(skills)})"
                )
            for target in [skill] if skill else skills:
                prompts[target] = prompts[target].overridden(config)
                for part in ("system", "user"):
                    given = config if isinstance(config, str) else getattr(config, part)
                    if given is not None and (part == "system" or not isinstance(config, str)):
                        origins[target][part] = f"prompts[{key!r}]"
        for skill, prompt in prompts.items():
            prompt.check(origins[skill])
        return prompts

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
        try:
            self._prompts = self.configured_prompts(settings.prompts)
        except PromptConfigError as exc:
            raise SystemExit(f"{self.card.name}: AGENTMESH_LLM_PROMPTS: {exc}") from None
        self._llm = LLMClient(settings)
        self._owns_llm = True
        if settings.configured:
            names = [p.name for p in settings.providers]
            log.info("LLM mode", extra={"providers": names, "models": list(settings.models)})
        else:
            log.info("offline mode: no LLM provider configured")

    async def shutdown(self) -> None:
        if self._owns_llm and self._llm is not None:
            await self._llm.aclose()

    # -- the handler ---------------------------------------------------------------------------

    def model_for(self, request: Request) -> LLMClient | None:
        """The client answering ``request``: the allowed model its ``model`` option names,
        else the chain (None: offline)."""
        name = request.options.get("model")
        if name is None:
            return self.llm
        if not isinstance(name, str):
            raise InvalidInput("options.model", "must be a string")
        try:
            if self._llm is None:
                raise ModelNotAllowed(name, ())
            return self._llm.for_model(name)
        except ModelNotAllowed as exc:
            raise InvalidInput("options.model", str(exc)) from None

    async def stream(self, request: Request) -> AsyncIterator[StreamItem]:
        llm = self.model_for(request)
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

    def prompt_values(self, request: Request, **values: str) -> dict[str, str]:
        """What fills the skill's templates for ``request``; ``values`` win over metadata."""
        prompt = self._prompt(request)
        metadata = prompt_variables(request)
        for name in sorted(prompt.required):
            if name not in metadata:
                raise InvalidInput(
                    f"message.metadata.{name}",
                    f"required by the prompt of skill {request.skill!r}: send it in the "
                    "request's metadata",
                )
        return {
            "agent": self.card.name,
            "skill": request.skill,
            **prompt.defaults,
            **metadata,
            **values,
        }

    def _prompt(self, request: Request) -> SkillPrompt:
        """The prompt of the request's skill (empty: the card's first skill)."""
        return self._prompts.get(request.skill) or self._prompts[self.card.skills[0].id]

    def system_prompt(self, request: Request, **values: str) -> str:
        """The skill's system template rendered for ``request``; ``values`` win over metadata."""
        return self._render(request, "system", self.prompt_values(request, **values))

    def _render(self, request: Request, part: str, variables: Mapping[str, str]) -> str:
        template: str = getattr(self._prompt(request), part)
        try:
            return render_prompt(template, variables)
        except PromptTemplateError as exc:  # checked at load: a bug if it happens
            raise InvalidInput("message.metadata", f"{part} prompt: {exc}") from None

    def chat(
        self, request: Request, *, earlier: Sequence[Message] = (), **values: str
    ) -> ChatRequest:
        """A chat request: the skill's system and user templates filled (``values``: what
        the handler supplies), after the ``earlier`` turns, with the request's
        ``temperature`` and ``max_tokens`` options."""
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
        variables = self.prompt_values(request, **values)
        system = Message.system(self._render(request, "system", variables))
        user = Message.user(self._render(request, "user", variables))
        return ChatRequest(
            messages=(system, *earlier, user),
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
