"""Request, response and usage types shared by every provider."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Role = Literal["system", "user", "assistant"]

#: Normalised finish reasons. Providers map their own vocabulary onto these
#: ("end_turn" and "stop_sequence" -> "stop", "max_tokens" -> "length"); any
#: other value is passed through unchanged.
FINISH_STOP = "stop"
FINISH_LENGTH = "length"

#: Characters per token used when a server reports no usage (a rough rule of thumb).
CHARS_PER_TOKEN = 4


class Message(BaseModel):
    """One chat message with plain-text content."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Role
    content: str

    @classmethod
    def system(cls, content: str) -> Message:
        return cls(role="system", content=content)

    @classmethod
    def user(cls, content: str) -> Message:
        return cls(role="user", content=content)

    @classmethod
    def assistant(cls, content: str) -> Message:
        return cls(role="assistant", content=content)


class ChatRequest(BaseModel):
    """A provider-independent chat completion request.

    ``temperature`` and ``max_tokens`` left at ``None`` take the provider's
    configured defaults. ``json_mode`` asks for a JSON reply: OpenAI-compatible
    servers get ``response_format: {"type": "json_object"}``, Anthropic gets an
    instruction appended to the system prompt (it has no JSON mode).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    messages: Sequence[Message] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=None, gt=0)
    stop: Sequence[str] | None = None
    json_mode: bool = False

    @field_validator("messages", "stop")
    @classmethod
    def _freeze(cls, value: Sequence[Any] | None) -> tuple[Any, ...] | None:
        return None if value is None else tuple(value)

    @classmethod
    def from_prompt(cls, user: str, *, system: str | None = None, **options: object) -> ChatRequest:
        """Build a request from a user prompt and an optional system prompt."""
        messages = [Message.user(user)]
        if system is not None:
            messages.insert(0, Message.system(system))
        return cls.model_validate({"messages": messages, **options})

    def with_messages(self, *extra: Message) -> ChatRequest:
        """A copy of this request with ``extra`` appended to the conversation."""
        return self.model_copy(update={"messages": (*self.messages, *extra)})


@dataclasses.dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one call, or the sum over several calls.

    ``cost_usd`` is ``None`` when no price is known. Adding usages sums the
    known costs (a call without a price contributes nothing) and is ``None``
    only when none of the summed calls had a price. ``estimated`` is true when
    any count was estimated from text length because the server sent none.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float | None = None
    estimated: bool = False

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        if self.cost_usd is None and other.cost_usd is None:
            cost: float | None = None
        else:
            cost = (self.cost_usd or 0.0) + (other.cost_usd or 0.0)
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            cost_usd=cost,
            estimated=self.estimated or other.estimated,
        )

    def __radd__(self, other: object) -> Usage:
        # Lets ``sum(usages)`` start from the integer 0.
        if other == 0:
            return self
        if isinstance(other, Usage):
            return other + self
        return NotImplemented

    @classmethod
    def estimate(cls, prompt_text: str, completion_text: str) -> Usage:
        """Counts estimated at ~4 characters per token, flagged as estimated."""
        prompt = math.ceil(len(prompt_text) / CHARS_PER_TOKEN)
        completion = math.ceil(len(completion_text) / CHARS_PER_TOKEN)
        return cls(prompt, completion, prompt + completion, estimated=True)


AttemptOutcome = Literal["ok", "failed", "circuit_open"]


@dataclasses.dataclass(frozen=True, slots=True)
class Attempt:
    """What happened when one provider of the chain was asked.

    ``tries`` counts HTTP requests made to that provider (1 + retries);
    ``error`` names the error class and its message when the outcome is not "ok".
    """

    provider: str
    model: str
    outcome: AttemptOutcome
    tries: int = 0
    status: int | None = None
    error: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ChatResponse:
    """A complete answer and where it came from."""

    text: str
    model: str
    provider: str
    finish_reason: str | None
    usage: Usage
    attempts: tuple[Attempt, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class ChatChunk:
    """One piece of a streamed answer.

    Intermediate chunks carry a text delta; the final chunk has ``final`` set
    and carries ``usage`` and ``finish_reason`` (its text may be empty). When
    streamed through :class:`~agentmesh.llm.LLMClient` the final chunk also
    carries the chain's ``attempts``.
    """

    text: str
    provider: str
    model: str
    final: bool = False
    finish_reason: str | None = None
    usage: Usage | None = None
    attempts: tuple[Attempt, ...] = ()


def prompt_text(messages: Sequence[Message]) -> str:
    """The concatenated message contents, used to estimate prompt tokens."""
    return "\n".join(m.content for m in messages)
