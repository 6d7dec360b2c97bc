"""The interface every provider implements."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from agentmesh.llm._types import ChatChunk, ChatRequest, ChatResponse


@runtime_checkable
class Provider(Protocol):
    """One LLM endpoint.

    ``complete`` and ``stream`` retry transient failures themselves, within
    ``timeout`` (seconds for the whole call, retries and backoff included;
    ``None`` is unbounded) and raise :class:`~agentmesh.llm.ProviderError`.
    ``stream`` yields text deltas as they arrive and ends with one chunk whose
    ``final`` is set, carrying usage and the finish reason; it is only retried
    before its first chunk was yielded.

    ``timeout`` is a parameter rather than left to the caller's
    ``asyncio.timeout`` (hence the ASYNC109 waivers): it is the budget of the
    whole call across retries and fallbacks, which the layer must know to
    never sleep past it and to report which provider ran out of time.
    """

    @property
    def name(self) -> str: ...

    @property
    def model(self) -> str: ...

    async def complete(self, req: ChatRequest, *, timeout: float | None = None) -> ChatResponse: ...

    def stream(
        self, req: ChatRequest, *, timeout: float | None = None
    ) -> AsyncIterator[ChatChunk]: ...

    async def aclose(self) -> None: ...
