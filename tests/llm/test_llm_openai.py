"""The OpenAI-compatible provider against a real HTTP server."""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING

import pytest

from agentmesh.llm import ChatChunk, ChatRequest, InvalidResponse, Message, Usage

if TYPE_CHECKING:
    from llm.fakellm import FakeLLMServer, MakeClient


def _request(**options: object) -> ChatRequest:
    return ChatRequest.from_prompt("Say hello.", system="You are terse.", **options)


async def test_complete_sends_the_wire_format_and_counts_usage(
    fake_llm: FakeLLMServer, make_client: MakeClient
) -> None:
    fake_llm.reply_text("Hello!", prompt_tokens=1000, completion_tokens=500)
    client = make_client(fake_llm.config("openai", model="gpt-4o-mini", temperature=0.2))

    response = await client.complete(_request(stop=["\n\n"], max_tokens=64))

    assert response.text == "Hello!"
    assert response.provider == "openai:gpt-4o-mini"
    assert response.model == "gpt-4o-mini"
    assert response.finish_reason == "stop"
    # gpt-4o-mini lists at $0.15 in / $0.60 out per million tokens.
    assert response.usage == Usage(1000, 500, 1500, cost_usd=response.usage.cost_usd)
    assert response.usage.cost_usd == pytest.approx(0.00045)
    assert [(a.provider, a.outcome, a.tries) for a in response.attempts] == [
        ("openai:gpt-4o-mini", "ok", 1)
    ]
    (request,) = fake_llm.requests
    assert request.method == "POST"
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {fake_llm.api_key}"
    assert request.json == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say hello."},
        ],
        "max_tokens": 64,
        "stream": False,
        "temperature": 0.2,
        "stop": ["\n\n"],
    }


async def test_json_mode_sets_response_format(
    fake_llm: FakeLLMServer, make_client: MakeClient
) -> None:
    fake_llm.reply_text('{"ok": true}')
    client = make_client(fake_llm.config("openai"))

    await client.complete(_request(json_mode=True))

    assert fake_llm.requests[0].json["response_format"] == {"type": "json_object"}


async def test_no_api_key_sends_no_authorization(
    fake_llm: FakeLLMServer, make_client: MakeClient
) -> None:
    fake_llm.reply_text("local")
    client = make_client(fake_llm.config("openai", model="llama3.1:8b", api_key=None))

    response = await client.complete(_request())

    assert response.text == "local"
    assert "authorization" not in fake_llm.requests[0].headers
    assert response.usage.cost_usd is None  # a local model has no price


async def test_missing_usage_is_estimated_and_flagged(
    fake_llm: FakeLLMServer, make_client: MakeClient
) -> None:
    fake_llm.reply_text("x" * 40, prompt_tokens=None, completion_tokens=None)
    client = make_client(fake_llm.config("openai"))

    response = await client.complete(ChatRequest(messages=[Message.user("y" * 20)]))

    assert response.usage.estimated
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (5, 10)
    assert response.usage.total_tokens == 15


async def test_stream_yields_each_chunk_before_the_server_sends_the_next(
    fake_llm: FakeLLMServer, make_client: MakeClient
) -> None:
    released = threading.Event()
    fake_llm.reply_text(
        chunks=["Hel", "lo, ", "world"],
        prompt_tokens=20,
        completion_tokens=3,
        gate=released,
        gate_after=1,
    )
    client = make_client(fake_llm.config("openai", model="gpt-4o"))

    async with contextlib.aclosing(client.stream(_request())) as stream:
        first = await anext(stream)
        # The server is holding the rest of the stream until `released` is set,
        # so this chunk can only have come from incremental parsing.
        assert first == ChatChunk("Hel", "openai:gpt-4o", "gpt-4o")
        released.set()
        rest = [chunk async for chunk in stream]

    assert [c.text for c in rest] == ["lo, ", "world", ""]
    final = rest[-1]
    assert final.final
    assert final.finish_reason == "stop"
    assert final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (20, 3)
    assert final.usage.cost_usd == pytest.approx((20 * 2.5 + 3 * 10) / 1e6)
    assert [(a.provider, a.outcome) for a in final.attempts] == [("openai:gpt-4o", "ok")]
    body = fake_llm.requests[0].json
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert fake_llm.requests[0].headers["accept"] == "text/event-stream"


async def test_stream_without_usage_estimates_it(
    fake_llm: FakeLLMServer, make_client: MakeClient
) -> None:
    fake_llm.reply_text(chunks=["abcd", "efgh"], prompt_tokens=None, completion_tokens=None)
    client = make_client(fake_llm.config("openai"))

    chunks = [c async for c in client.stream(ChatRequest(messages=[Message.user("1234")]))]

    usage = chunks[-1].usage
    assert usage is not None
    assert usage.estimated
    assert (usage.prompt_tokens, usage.completion_tokens) == (1, 2)


async def test_stream_answered_with_plain_json_is_accepted(
    fake_llm: FakeLLMServer, make_client: MakeClient
) -> None:
    # Some servers ignore "stream": true and answer with one JSON body.
    fake_llm.reply_status(
        200,
        body=b'{"model": "m", "choices": [{"message": {"content": "whole"}, '
        b'"finish_reason": "length"}], "usage": {"prompt_tokens": 2, "completion_tokens": 3}}',
    )
    client = make_client(fake_llm.config("openai"))

    chunks = [c async for c in client.stream(_request())]

    assert [c.text for c in chunks] == ["whole", ""]
    assert chunks[-1].finish_reason == "length"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 5


async def test_a_body_that_is_not_a_completion_is_invalid(
    fake_llm: FakeLLMServer, make_client: MakeClient
) -> None:
    fake_llm.reply_status(200, body=b'{"unexpected": 1}')
    client = make_client(fake_llm.config("openai"))

    with pytest.raises(InvalidResponse, match="choices"):
        await client.complete(_request())
    assert len(fake_llm.requests) == 1
