"""The provider chain: fallback, circuits, and what is reported."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import pytest

from agentmesh.llm import (
    AllProvidersFailed,
    AuthError,
    BadRequest,
    ChatChunk,
    ChatRequest,
    ChatResponse,
    CircuitOpenError,
    LLMClient,
    LLMSettings,
    NotConfiguredError,
    Provider,
    ProviderError,
    ServerError,
    StreamError,
    Usage,
    to_agent_error,
)
from agentmesh.runtime.errors import ErrorCode

if TYPE_CHECKING:
    from llm.fakellm import FakeLLMServer, MakeClient

REQUEST = ChatRequest.from_prompt("ping")
ServerFactory = Callable[[], "FakeLLMServer"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _collect(stream: AsyncIterator[ChatChunk], into: list[ChatChunk]) -> None:
    async for chunk in stream:
        into.append(chunk)


async def test_falls_back_to_the_second_provider_and_names_it(
    llm_server_factory: ServerFactory, make_client: MakeClient
) -> None:
    first, second = llm_server_factory(), llm_server_factory()
    for _ in range(2):
        first.reply_status(500, "down")
    second.reply_text("from the backup", model="claude-3-5-haiku-20241022")
    client = make_client(
        first.config("openai", model="gpt-4o", max_retries=1),
        second.config("anthropic"),
    )

    response = await client.complete(REQUEST)

    assert response.text == "from the backup"
    assert response.provider == "anthropic:claude-3-5-haiku-20241022"
    assert response.model == "claude-3-5-haiku-20241022"
    assert [(a.provider, a.outcome, a.tries, a.status) for a in response.attempts] == [
        ("openai:gpt-4o", "failed", 2, 500),
        ("anthropic:claude-3-5-haiku-20241022", "ok", 1, None),
    ]
    assert response.attempts[0].error == (
        "ServerError: provider 'openai:gpt-4o' failed (HTTP 500): down"
    )
    assert (len(first.requests), len(second.requests)) == (2, 1)


async def test_a_rejected_key_moves_on_to_the_next_provider(
    llm_server_factory: ServerFactory, make_client: MakeClient
) -> None:
    first, second = llm_server_factory(), llm_server_factory()
    first.reply_status(401)
    second.reply_text("ok")
    client = make_client(first.config("openai"), second.config("openai", model="gpt-4.1"))

    response = await client.complete(REQUEST)

    assert response.provider == "openai:gpt-4.1"
    assert response.attempts[0].error is not None
    assert response.attempts[0].error.startswith("AuthError")


async def test_a_bad_request_stops_the_chain(
    llm_server_factory: ServerFactory, make_client: MakeClient
) -> None:
    first, second = llm_server_factory(), llm_server_factory()
    first.reply_status(422, "messages: field required")
    client = make_client(first.config("openai"), second.config("anthropic"))

    with pytest.raises(BadRequest) as caught:
        await client.complete(REQUEST)

    assert second.requests == []
    assert [(a.provider, a.outcome) for a in caught.value.attempts] == [
        ("openai:gpt-4o-mini", "failed")
    ]


async def test_an_unknown_model_moves_on_and_is_a_precondition(
    llm_server_factory: ServerFactory, make_client: MakeClient
) -> None:
    first, second = llm_server_factory(), llm_server_factory()
    first.reply_status(404, "model not found")
    second.reply_status(401)
    client = make_client(first.config("openai", model="nope"), second.config("anthropic"))

    with pytest.raises(AllProvidersFailed) as caught:
        await client.complete(REQUEST)

    error = caught.value
    assert [type(e) for e in error.errors] == [BadRequest, AuthError]
    agent_error = to_agent_error(error)
    assert agent_error.code is ErrorCode.FAILED_PRECONDITION
    assert "provider 'openai:nope' does not serve model 'nope'" in agent_error.message
    assert "provider 'anthropic:claude-3-5-haiku-20241022' rejected the API key (HTTP 401)" in (
        agent_error.message
    )


async def test_everything_down_is_unavailable(
    llm_server_factory: ServerFactory, make_client: MakeClient
) -> None:
    first, second = llm_server_factory(), llm_server_factory()
    first.reply_status(503)
    second.reply_status(429)
    client = make_client(
        first.config("openai", max_retries=0), second.config("anthropic", max_retries=0)
    )

    with pytest.raises(AllProvidersFailed) as caught:
        await client.complete(REQUEST)

    assert caught.value.retryable
    assert to_agent_error(caught.value).code is ErrorCode.UNAVAILABLE
    assert [a.outcome for a in caught.value.attempts] == ["failed", "failed"]


async def test_circuit_opens_after_consecutive_failures_and_half_opens_after_cooldown(
    llm_server_factory: ServerFactory, make_client: MakeClient
) -> None:
    first, second = llm_server_factory(), llm_server_factory()
    clock = FakeClock()
    client = make_client(
        first.config("openai", max_retries=0),
        second.config("anthropic"),
        circuit_failure_threshold=2,
        circuit_cooldown=30.0,
        clock=clock,
    )
    for _ in range(2):
        first.reply_status(500)
        second.reply_text("backup")
        assert (await client.complete(REQUEST)).text == "backup"
    assert len(first.requests) == 2

    # Open: the first provider is skipped without a request.
    second.reply_text("backup")
    response = await client.complete(REQUEST)
    assert [a.outcome for a in response.attempts] == ["circuit_open", "ok"]
    assert len(first.requests) == 2

    # After the cool-down it gets one call again, and a success closes the circuit.
    clock.now += 30.0
    first.reply_text("primary is back")
    response = await client.complete(REQUEST)
    assert response.provider == "openai:gpt-4o-mini"
    assert [a.outcome for a in response.attempts] == ["ok"]


async def test_all_circuits_open_fails_fast(
    fake_llm: FakeLLMServer, make_client: MakeClient
) -> None:
    client = make_client(
        fake_llm.config("openai", max_retries=0),
        circuit_failure_threshold=1,
        clock=FakeClock(),
    )
    fake_llm.reply_status(500)
    with pytest.raises(ServerError):
        await client.complete(REQUEST)

    with pytest.raises(CircuitOpenError, match="cooling down") as caught:
        await client.complete(REQUEST)

    assert len(fake_llm.requests) == 1
    assert to_agent_error(caught.value).code is ErrorCode.UNAVAILABLE


async def test_stream_falls_back_before_the_first_chunk(
    llm_server_factory: ServerFactory, make_client: MakeClient
) -> None:
    first, second = llm_server_factory(), llm_server_factory()
    first.reply_status(503)
    second.reply_text(chunks=["b", "ackup"])
    client = make_client(first.config("openai", max_retries=0), second.config("anthropic"))

    chunks: list[ChatChunk] = []
    await _collect(client.stream(REQUEST), chunks)

    assert "".join(c.text for c in chunks) == "backup"
    assert {c.provider for c in chunks} == {"anthropic:claude-3-5-haiku-20241022"}
    assert [(a.provider, a.outcome) for a in chunks[-1].attempts] == [
        ("openai:gpt-4o-mini", "failed"),
        ("anthropic:claude-3-5-haiku-20241022", "ok"),
    ]


async def test_stream_does_not_fall_back_after_the_first_chunk(
    llm_server_factory: ServerFactory, make_client: MakeClient
) -> None:
    first, second = llm_server_factory(), llm_server_factory()
    first.reply_text(chunks=["partial", "never"], drop_after=1)
    second.reply_text("backup")
    client = make_client(first.config("openai", max_retries=2), second.config("anthropic"))

    chunks: list[ChatChunk] = []
    with pytest.raises(StreamError) as caught:
        await _collect(client.stream(REQUEST), chunks)

    assert [c.text for c in chunks] == ["partial"]
    assert caught.value.after_output
    assert second.requests == []
    assert len(first.requests) == 1
    assert to_agent_error(caught.value).code is ErrorCode.UNAVAILABLE


async def test_without_providers_the_client_is_offline() -> None:
    client = LLMClient(LLMSettings())

    assert not client.configured
    with pytest.raises(NotConfiguredError) as caught:
        await client.complete(REQUEST)
    assert to_agent_error(caught.value).code is ErrorCode.FAILED_PRECONDITION
    with pytest.raises(NotConfiguredError):
        await _collect(client.stream(REQUEST), [])
    await client.aclose()


class ScriptedProvider:
    """An in-memory Provider: the chain works with any implementation of the protocol."""

    def __init__(self, name: str, outcome: str | ProviderError) -> None:
        self._name = name
        self._outcome = outcome
        self.calls: list[float | None] = []

    @property
    def name(self) -> str:
        return self._name

    @property
    def model(self) -> str:
        return "scripted"

    async def complete(self, req: ChatRequest, *, timeout: float | None = None) -> ChatResponse:
        self.calls.append(timeout)
        if isinstance(self._outcome, ProviderError):
            raise self._outcome
        return ChatResponse(self._outcome, "scripted", self._name, "stop", Usage(1, 1, 2))

    async def stream(
        self,
        req: ChatRequest,
        *,
        timeout: float | None = None,
    ) -> AsyncIterator[ChatChunk]:
        response = await self.complete(req, timeout=timeout)
        yield ChatChunk(response.text, self._name, "scripted")
        yield ChatChunk("", self._name, "scripted", final=True, usage=response.usage)

    async def aclose(self) -> None:
        pass


async def test_custom_providers_and_the_overall_timeout() -> None:
    down = ScriptedProvider(
        "down", ServerError("provider 'down' failed (HTTP 500)", provider="down")
    )
    up = ScriptedProvider("up", "fine")
    assert isinstance(up, Provider)
    async with LLMClient(providers=[down, up]) as client:
        response = await client.complete(REQUEST, timeout=60)
        chunks: list[ChatChunk] = []
        await _collect(client.stream(REQUEST), chunks)

    assert (response.text, response.provider) == ("fine", "up")
    assert [(a.provider, a.outcome, a.tries) for a in response.attempts] == [
        ("down", "failed", 0),
        ("up", "ok", 1),
    ]
    # Each provider gets what is left of the caller's budget.
    assert down.calls[0] is not None
    assert up.calls[0] is not None
    assert 0 < up.calls[0] <= down.calls[0] <= 60
    assert [c.text for c in chunks] == ["fine", ""]
    assert down.calls[1] is None  # no timeout given, none configured
