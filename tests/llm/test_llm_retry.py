"""Retries, backoff, Retry-After and deadlines, observed through an injected sleep."""

from __future__ import annotations

import random
import socket
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest

from agentmesh.llm import (
    AuthError,
    BadRequest,
    ChatChunk,
    ChatRequest,
    DeadlineExceededError,
    NetworkError,
    ProviderConfig,
    RateLimited,
    ServerError,
    StreamError,
    parse_retry_after,
    to_agent_error,
)
from agentmesh.runtime.errors import ErrorCode
from agentmesh.runtime.resilience import Backoff

if TYPE_CHECKING:
    from llm.fakellm import FakeLLMServer, MakeClient, SleepRecorder

REQUEST = ChatRequest.from_prompt("ping")


async def test_429_waits_for_retry_after_then_succeeds(
    fake_llm: FakeLLMServer, make_client: MakeClient, sleeps: SleepRecorder
) -> None:
    fake_llm.reply_status(429, "slow down", headers={"Retry-After": "7"})
    fake_llm.reply_text("pong")
    client = make_client(fake_llm.config("openai", max_retries=2, backoff_initial=0.1))

    response = await client.complete(REQUEST)

    assert response.text == "pong"
    assert len(fake_llm.requests) == 2
    assert len(sleeps.delays) == 1
    assert sleeps.delays[0] >= 7.0  # the server's Retry-After, not the 0.1s backoff
    assert response.attempts[0].tries == 2


async def test_429_with_an_http_date_retry_after(
    fake_llm: FakeLLMServer, make_client: MakeClient, sleeps: SleepRecorder
) -> None:
    fake_llm.reply_status(429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    fake_llm.reply_text("pong")
    client = make_client(fake_llm.config("anthropic", max_retries=1))

    assert (await client.complete(REQUEST)).text == "pong"
    assert len(sleeps.delays) == 1  # a date in the past means "now": plain backoff


def test_parse_retry_after() -> None:
    now = datetime(2015, 10, 21, 7, 27, 30, tzinfo=UTC)
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=now) == 30.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now=now) == 0.0
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None
    assert parse_retry_after(None) is None


async def test_retry_after_beyond_max_retry_after_is_not_waited_for(
    fake_llm: FakeLLMServer, make_client: MakeClient, sleeps: SleepRecorder
) -> None:
    fake_llm.reply_status(429, headers={"Retry-After": "3600"})
    client = make_client(fake_llm.config("openai", max_retries=3, max_retry_after=60))

    with pytest.raises(RateLimited) as caught:
        await client.complete(REQUEST)

    assert caught.value.retry_after == 3600.0
    assert sleeps.delays == []
    assert len(fake_llm.requests) == 1


async def test_500_is_retried_with_full_jitter_backoff(
    fake_llm: FakeLLMServer, make_client: MakeClient, sleeps: SleepRecorder
) -> None:
    fake_llm.reply_status(500, "boom")
    fake_llm.reply_status(503, "overloaded")
    fake_llm.reply_text("finally")
    client = make_client(
        fake_llm.config("openai", max_retries=2, backoff_initial=1.0, backoff_max=1.5)
    )

    response = await client.complete(REQUEST)

    assert response.text == "finally"
    assert len(fake_llm.requests) == 3
    assert len(sleeps.delays) == 2
    assert 0.0 <= sleeps.delays[0] <= 1.0  # min(max, initial * 2**0)
    assert 0.0 <= sleeps.delays[1] <= 1.5  # min(max, initial * 2**1) capped
    assert response.attempts[0].tries == 3


async def test_exhausted_retries_raise_the_last_error_as_unavailable(
    fake_llm: FakeLLMServer, make_client: MakeClient, sleeps: SleepRecorder
) -> None:
    for _ in range(3):
        fake_llm.reply_status(502, "bad gateway")
    client = make_client(fake_llm.config("openai", max_retries=2))

    with pytest.raises(ServerError) as caught:
        await client.complete(REQUEST)

    error = caught.value
    assert (error.status, error.tries, error.retryable) == (502, 3, True)
    assert len(fake_llm.requests) == 3
    assert len(sleeps.delays) == 2
    agent_error = to_agent_error(error)
    assert agent_error.code is ErrorCode.UNAVAILABLE
    assert agent_error.message == (
        "provider 'openai:gpt-4o-mini' failed (HTTP 502): bad gateway (after 3 tries)"
    )


async def test_401_is_not_retried_and_names_the_provider(
    fake_llm: FakeLLMServer, make_client: MakeClient, sleeps: SleepRecorder
) -> None:
    fake_llm.reply_status(401, "Incorrect API key provided")
    client = make_client(fake_llm.config("openai", max_retries=5))

    with pytest.raises(AuthError) as caught:
        await client.complete(REQUEST)

    assert len(fake_llm.requests) == 1
    assert sleeps.delays == []
    assert str(caught.value) == "provider 'openai:gpt-4o-mini' rejected the API key (HTTP 401)"
    assert caught.value.detail == "Incorrect API key provided"
    agent_error = to_agent_error(caught.value)
    assert agent_error.code is ErrorCode.FAILED_PRECONDITION
    assert agent_error.message == "provider 'openai:gpt-4o-mini' rejected the API key (HTTP 401)"


async def test_400_is_not_retried_and_is_an_invalid_argument(
    fake_llm: FakeLLMServer, make_client: MakeClient, sleeps: SleepRecorder
) -> None:
    fake_llm.reply_status(400, "prompt is too long: 300000 tokens > 200000 maximum")
    client = make_client(fake_llm.config("anthropic", max_retries=5))

    with pytest.raises(BadRequest) as caught:
        await client.complete(REQUEST)

    assert len(fake_llm.requests) == 1
    assert sleeps.delays == []
    assert caught.value.caused_by_request
    agent_error = to_agent_error(caught.value)
    assert agent_error.code is ErrorCode.INVALID_ARGUMENT
    assert "prompt is too long" in agent_error.message


async def test_hanging_provider_hits_the_callers_deadline(
    fake_llm: FakeLLMServer, make_client: MakeClient, sleeps: SleepRecorder
) -> None:
    fake_llm.reply_hang()
    client = make_client(fake_llm.config("openai", max_retries=3, read_timeout=60))

    with pytest.raises(DeadlineExceededError) as caught:
        await client.complete(REQUEST, timeout=0.3)

    assert len(fake_llm.wait_for_requests(1)) == 1
    assert sleeps.delays == []
    assert to_agent_error(caught.value).code is ErrorCode.DEADLINE_EXCEEDED


async def test_hanging_stream_hits_the_callers_deadline_after_output(
    fake_llm: FakeLLMServer, make_client: MakeClient
) -> None:
    never = threading.Event()  # the server stalls after the first chunk
    fake_llm.reply_text(chunks=["one", "two"], gate=never)
    client = make_client(fake_llm.config("anthropic", read_timeout=60))

    received: list[str] = []
    with pytest.raises(DeadlineExceededError):
        await _collect(client.stream(REQUEST, timeout=0.5), received)

    assert received == ["one"]


async def test_a_retry_that_would_sleep_past_the_deadline_is_not_slept(
    fake_llm: FakeLLMServer, make_client: MakeClient, sleeps: SleepRecorder
) -> None:
    fake_llm.reply_status(429, headers={"Retry-After": "30"})
    client = make_client(fake_llm.config("openai", max_retries=3))

    with pytest.raises(DeadlineExceededError, match="too little to retry") as caught:
        await client.complete(REQUEST, timeout=10)

    assert sleeps.delays == []
    assert len(fake_llm.requests) == 1
    assert isinstance(caught.value.last_error, RateLimited)


async def test_an_absolute_deadline_in_the_past_sends_nothing(
    fake_llm: FakeLLMServer, make_client: MakeClient
) -> None:
    client = make_client(fake_llm.config("openai"))

    with pytest.raises(DeadlineExceededError):
        await client.complete(REQUEST, deadline=0.0)

    assert fake_llm.requests == []


async def test_stream_is_retried_before_the_first_chunk_only(
    fake_llm: FakeLLMServer, make_client: MakeClient, sleeps: SleepRecorder
) -> None:
    fake_llm.reply_status(503, "warming up")
    fake_llm.reply_text(chunks=["a", "b", "c"], drop_after=2)  # cut after "b"
    fake_llm.reply_text("never requested")
    client = make_client(fake_llm.config("openai", max_retries=3))

    received: list[str] = []
    with pytest.raises(StreamError) as caught:
        await _collect(client.stream(REQUEST), received)

    assert received == ["a", "b"]
    assert caught.value.after_output
    assert len(fake_llm.requests) == 2  # the 503 was retried, the cut stream was not
    assert len(sleeps.delays) == 1
    assert fake_llm.pending_replies == 1


async def test_connection_refused_is_a_retryable_network_error(
    make_client: MakeClient, sleeps: SleepRecorder
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = ProviderConfig(
        kind="openai", model="m", base_url=f"http://127.0.0.1:{port}/v1", max_retries=1
    )
    client = make_client(config)

    with pytest.raises(NetworkError) as caught:
        await client.complete(REQUEST)

    assert caught.value.retryable
    assert caught.value.tries == 2
    assert len(sleeps.delays) == 1


def test_full_jitter_backoff_bounds() -> None:
    rng = random.Random(7)
    backoff = Backoff(initial=0.5, maximum=10.0)
    for retry in range(1, 9):
        cap = min(10.0, 0.5 * 2 ** (retry - 1))
        delays = [backoff.delay(retry, rng=rng) for _ in range(50)]
        assert all(0.0 <= d <= cap for d in delays)
    assert Backoff(initial=1.0, maximum=3.0).delay(1000, rng=rng) <= 3.0


async def _collect(stream: AsyncIterator[ChatChunk], into: list[str]) -> None:
    async for chunk in stream:
        into.append(chunk.text)
