"""The agent-author API: a card plus one async handler.

Subclass :class:`Agent` and implement ``invoke`` (returns a Result) or
``stream`` (an async generator yielding ``str`` deltas, :class:`Partial`
outputs and, optionally, a final :class:`Result`)::

    class Shouter(Agent):
        card = AgentCard(name="shouter", description="Upper-cases text",
                         skills=(Skill(id="shout"),))

        async def invoke(self, request: Request) -> Result:
            return Result.of(text=request.require_text().upper())

or decorate a function with :func:`agent`::

    @agent(AgentCard(name="shouter", description="...", skills=(Skill(id="shout"),)))
    async def shouter(request: Request) -> Result: ...

Either way ``agentmesh.runtime.run(shouter)`` serves it.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeAlias, cast

from agentmesh.runtime.errors import AgentError, NotFound, Reason
from agentmesh.runtime.types import AgentCard, Artifact, Part, Partial, Request, Result, TextPart

StreamItem: TypeAlias = str | Partial | Result
InvokeHandler: TypeAlias = Callable[[Request], Awaitable[Result]]
StreamHandler: TypeAlias = Callable[[Request], AsyncIterator[StreamItem]]


class Agent:
    """Base class of every agent. Override ``invoke`` or ``stream`` (or both)."""

    card: AgentCard
    """Set as a class attribute by subclasses."""

    async def invoke(self, request: Request) -> Result:
        """Run the request to completion. Default: drain ``stream``."""
        if type(self).stream is Agent.stream:
            raise NotImplementedError(f"{type(self).__name__} implements neither invoke nor stream")
        return await collect(self.stream(request))

    async def stream(self, request: Request) -> AsyncIterator[StreamItem]:
        """Yield progress, then the result. Default: one final ``invoke`` result."""
        yield await self.invoke(request)

    async def startup(self) -> None:
        """Called once before the server accepts calls (open clients here)."""

    async def shutdown(self) -> None:
        """Called once after the server has drained."""

    @property
    def streams_natively(self) -> bool:
        return type(self).stream is not Agent.stream

    def resolve_skill(self, skill: str) -> str:
        """The card's skill id for a requested one (the first skill when empty)."""
        if not skill:
            return self.card.skills[0].id
        if self.card.skill(skill) is None:
            offered = ", ".join(s.id for s in self.card.skills)
            raise NotFound(
                f"agent {self.card.name!r} has no skill {skill!r}; it offers: {offered}",
                reason=Reason.SKILL_NOT_FOUND,
            )
        return skill


class _FunctionAgent(Agent):
    def __init__(self, card: AgentCard, handler: InvokeHandler | StreamHandler) -> None:
        self.card = card
        self._invoke: InvokeHandler | None = None
        self._stream: StreamHandler | None = None
        if inspect.isasyncgenfunction(handler):
            self._stream = cast("StreamHandler", handler)
        else:
            self._invoke = cast("InvokeHandler", handler)

    @property
    def streams_natively(self) -> bool:
        return self._stream is not None

    async def invoke(self, request: Request) -> Result:
        if self._invoke is not None:
            return await self._invoke(request)
        assert self._stream is not None
        return await collect(self._stream(request))

    async def stream(self, request: Request) -> AsyncIterator[StreamItem]:
        if self._stream is None:
            yield await self.invoke(request)
            return
        async for item in self._stream(request):
            yield item


def agent(card: AgentCard) -> Callable[[InvokeHandler | StreamHandler], Agent]:
    """Make an :class:`Agent` from one async function or async generator function."""

    def wrap(handler: InvokeHandler | StreamHandler) -> Agent:
        if not (inspect.iscoroutinefunction(handler) or inspect.isasyncgenfunction(handler)):
            raise TypeError("@agent needs an async def function or async generator")
        return _FunctionAgent(card, handler)

    return wrap


class Assembler:
    """Turns a handler's stream items into partial outputs and one final result.

    A yielded Result is the answer; without one, the partial outputs are
    assembled into artifacts (consecutive text deltas merge into one part).
    """

    def __init__(self) -> None:
        self._artifacts: dict[str, list[Part]] = {}
        self._final: Result | None = None

    def feed(self, item: StreamItem) -> Partial | None:
        """Record one item; returns the partial output to emit, if any."""
        if isinstance(item, Result):
            self._final = item
            return None
        if self._final is not None:
            raise AgentError("handler yielded output after its final result")
        partial = Partial((TextPart(item),)) if isinstance(item, str) else item
        parts = self._artifacts.setdefault(partial.artifact_id, [])
        if not partial.append:
            parts.clear()
        for part in partial.parts:
            if isinstance(part, TextPart) and parts and isinstance(parts[-1], TextPart):
                parts[-1] = TextPart(parts[-1].text + part.text, parts[-1].media_type)
            else:
                parts.append(part)
        return partial

    def result(self) -> Result:
        if self._final is not None:
            return self._final
        return Result(
            artifacts=tuple(
                Artifact(parts=tuple(parts), name=aid, artifact_id=aid)
                for aid, parts in self._artifacts.items()
            )
        )


async def collect(items: AsyncIterator[StreamItem]) -> Result:
    """Drain a handler's stream into its result."""
    assembler = Assembler()
    async for item in items:
        assembler.feed(item)
    return assembler.result()
