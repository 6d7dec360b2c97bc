"""The Anthropic Messages provider against a real HTTP server."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

from agentmesh.llm import ChatChunk, ChatRequest, Message, StreamError

if TYPE_CHECKING:
    from llm.fakellm import FakeLLMServer, MakeClient

MODEL = "claude-3-5-haiku-20241022"


def _request(**options: object) -> ChatRequest:
    return ChatRequest.model_validate(
        {
            "messages": [
                Message.system("You are terse."),
                Message.user("Say hello."),
                Message.assistant("Hello."),
                Message.user("Again."),
            ],
            **options,
        }
    )


async def _collect(stream: AsyncIterator[ChatChunk], into: list[str]) -> None:
    async for chunk in stream:
        into.append(chunk.text)


def _event(name: str, data: object) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


async def test_complete_sends_the_wire_format_and_counts_usage(
    fake_llm: FakeLLMServer, make_client: MakeClient
) -> None:
    fake_llm.reply_text(
        "Hello again.", prompt_tokens=2000, completion_tokens=1000, finish_reason="length"
    )
    client = make_client(fake_llm.config("anthropic", max_tokens=300))

    response = await client.complete(_request(stop=["END"], temperature=0.5))

    assert response.text == "Hello again."
    assert response.provider == f"anthropic:{MODEL}"
    assert response.model == MODEL
    assert response.finish_reason == "length"  # "max_tokens" normalised
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (2000, 1000)
    assert response.usage.total_tokens == 3000
    assert not response.usage.estimated
    # claude-3-5-haiku lists at $0.80 in / $4.00 out per million tokens.
    assert response.usage.cost_usd == pytest.approx(0.0056)
    (request,) = fake_llm.requests
    assert request.path == "/v1/messages"
    assert request.headers["x-api-key"] == fake_llm.api_key
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in request.headers
    assert request.json == {
        "model": MODEL,
        "max_tokens": 300,
        "system": "You are terse.",
        "messages": [
            {"role": "user", "content": "Say hello."},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Again."},
        ],
        "stream": False,
        "temperature": 0.5,
        "stop_sequences": ["END"],
    }


async def test_json_mode_is_an_instruction_in_the_system_prompt(
    fake_llm: FakeLLMServer, make_client: MakeClient
) -> None:
    fake_llm.reply_text("{}")
    client = make_client(fake_llm.config("anthropic"))

    await client.complete(_request(json_mode=True))

    system = fake_llm.requests[0].json["system"]
    assert system.startswith("You are terse.\n\n")
    assert "JSON" in system


async def test_stream_yields_each_delta_before_the_server_sends_the_next(
    fake_llm: FakeLLMServer, make_client: MakeClient
) -> None:
    released = threading.Event()
    fake_llm.reply_text(
        chunks=["Hi", " there", "!"],
        prompt_tokens=25,
        completion_tokens=15,
        gate=released,
        gate_after=1,
    )
    client = make_client(fake_llm.config("anthropic"))

    async with contextlib.aclosing(client.stream(_request())) as stream:
        first = await anext(stream)
        assert (first.text, first.final) == ("Hi", False)
        released.set()
        rest = [chunk async for chunk in stream]

    assert [c.text for c in rest] == [" there", "!", ""]
    final = rest[-1]
    assert final.final
    assert final.finish_reason == "stop"  # "end_turn" normalised
    assert final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (25, 15)
    assert final.usage.cost_usd == pytest.approx((25 * 0.8 + 15 * 4.0) / 1e6)
    assert fake_llm.requests[0].json["stream"] is True


async def test_stream_parses_raw_events_ignoring_pings_and_comments(
    fake_llm: FakeLLMServer, make_client: MakeClient
) -> None:
    fake_llm.reply_sse(
        ": a comment line\n\n",
        _event(
            "message_start",
            {"type": "message_start", "message": {"model": MODEL, "usage": {"input_tokens": 9}}},
        ),
        'event: ping\ndata: {"type": "ping"}\n\n',
        _event(
            "content_block_delta",
            {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "multi"}},
        ),
        # one event split over two data lines is joined with a newline
        'event: content_block_delta\ndata: {"type": "content_block_delta",\n'
        'data: "delta": {"type": "text_delta", "text": "-line"}}\n\n',
        _event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {"output_tokens": 4},
            },
        ),
        _event("message_stop", {"type": "message_stop"}),
    )
    client = make_client(fake_llm.config("anthropic"))

    chunks = [c async for c in client.stream(_request())]

    assert "".join(c.text for c in chunks) == "multi-line"
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (9, 4)


async def test_error_event_before_output_is_retried(
    fake_llm: FakeLLMServer, make_client: MakeClient
) -> None:
    fake_llm.reply_sse(
        _event("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Busy"}})
    )
    fake_llm.reply_text(chunks=["ok"])
    client = make_client(fake_llm.config("anthropic", max_retries=1))

    chunks = [c async for c in client.stream(_request())]

    assert [c.text for c in chunks] == ["ok", ""]
    assert len(fake_llm.requests) == 2
    assert chunks[-1].attempts[0].tries == 2


async def test_error_event_after_output_is_a_stream_error(
    fake_llm: FakeLLMServer, make_client: MakeClient
) -> None:
    fake_llm.reply_sse(
        _event(
            "content_block_delta",
            {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "par"}},
        ),
        _event(
            "error", {"type": "error", "error": {"type": "overloaded_error", "message": "Busy"}}
        ),
    )
    client = make_client(fake_llm.config("anthropic", max_retries=3))

    received: list[str] = []
    with pytest.raises(StreamError, match="after output began") as caught:
        await _collect(client.stream(_request()), received)

    assert received == ["par"]
    assert caught.value.after_output
    assert len(fake_llm.requests) == 1


async def test_stream_cut_before_message_stop_is_an_error(
    fake_llm: FakeLLMServer, make_client: MakeClient
) -> None:
    fake_llm.reply_sse(
        _event("message_start", {"type": "message_start", "message": {"usage": {}}}),
    )
    client = make_client(fake_llm.config("anthropic", max_retries=0))

    with pytest.raises(StreamError, match="message_stop"):
        await _collect(client.stream(_request()), [])
