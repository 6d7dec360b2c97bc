"""The API key never shows up in logs, errors, reprs or settings."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import pydantic
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from pydantic import SecretStr

from agentmesh.llm import (
    ChatRequest,
    LLMClient,
    LLMSettings,
    ProviderConfig,
    ProviderError,
    build_provider,
    to_agent_error,
)
from agentmesh.llm import _http as llm_http

if TYPE_CHECKING:
    from llm.fakellm import FakeLLMServer, MakeClient

KEY = "sk-live-TOPSECRET-4242424242424242"
REQUEST = ChatRequest.from_prompt("ping")


def _exception_texts(error: BaseException) -> list[str]:
    """str and repr of the error and of every exception chained to it."""
    texts: list[str] = []
    current: BaseException | None = error
    seen: set[int] = set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts += [str(current), repr(current), *map(str, current.args)]
        if isinstance(current, ProviderError):
            texts += [str(current.detail), repr(to_agent_error(current))]
            texts += [str(to_agent_error(current))]
        current = current.__cause__ or current.__context__
    return texts


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_key_is_sent_but_never_logged_or_echoed(
    kind: str,
    fake_llm: FakeLLMServer,
    make_client: MakeClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, httpx and httpcore included
    # Servers echoing (part of) the key back must not get it into our errors or logs.
    fake_llm.reply_status(500, f"upstream trouble for key {KEY}")
    fake_llm.reply_status(401, f"Incorrect API key provided: {KEY}")
    config = fake_llm.config(kind, api_key=KEY, max_retries=1)
    client = make_client(config)

    with pytest.raises(ProviderError) as caught:
        await client.complete(REQUEST)

    sent = fake_llm.requests[0].headers
    assert KEY in (sent.get("authorization", "") + sent.get("x-api-key", ""))
    assert caplog.records, "the retry should have been logged"
    assert KEY not in caplog.text
    for text in _exception_texts(caught.value):
        assert KEY not in text
    assert "[REDACTED]" in str(caught.value.attempts) or "[REDACTED]" in caplog.text
    for attempt in caught.value.attempts:
        assert KEY not in repr(attempt)
    assert KEY not in repr(client)
    assert KEY not in repr(client.providers)


async def test_network_errors_do_not_carry_the_key(make_client: MakeClient) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = ProviderConfig(
        kind="anthropic", model="m", base_url=f"http://127.0.0.1:{port}", api_key=SecretStr(KEY)
    )
    client = make_client(config)
    with pytest.raises(ProviderError) as caught:
        await client.complete(REQUEST)
    for text in _exception_texts(caught.value):
        assert KEY not in text


def test_settings_and_configs_hide_the_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AGENTMESH_LLM_PROVIDER", "openai")
    monkeypatch.setenv("AGENTMESH_LLM_MODEL", "gpt-4o")
    monkeypatch.setenv("AGENTMESH_LLM_API_KEY", KEY)
    settings = LLMSettings()

    assert settings.providers[0].api_key is not None
    assert settings.providers[0].api_key.get_secret_value() == KEY
    for text in (
        repr(settings),
        str(settings),
        repr(settings.providers),
        str(settings.model_dump()),
        settings.model_dump_json(),
        repr(build_provider(settings.providers[0])),
    ):
        assert KEY not in text

    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    from_file = ProviderConfig(kind="anthropic", model="m", api_key_file=key_file)
    assert from_file.api_key is not None
    assert from_file.api_key.get_secret_value() == KEY
    assert KEY not in repr(from_file)


@pytest.mark.parametrize(
    "bad",
    [
        {"temperature": 9},
        {"unknown_field": 1},
        {"api_key_file": "/nonexistent/key"},
        {"base_url": "ftp://example.com"},
    ],
)
def test_validation_errors_do_not_echo_the_key(bad: dict[str, object]) -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        ProviderConfig.model_validate({"kind": "openai", "model": "m", "api_key": KEY, **bad})
    assert KEY not in str(caught.value)
    assert KEY not in repr(caught.value.errors())


def test_bad_provider_json_in_env_does_not_echo_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AGENTMESH_LLM_PROVIDERS",
        f'[{{"kind": "openai", "model": "m", "api_key": "{KEY}", "temperature": 7}}]',
    )
    with pytest.raises(pydantic.ValidationError) as caught:
        LLMSettings()
    assert KEY not in str(caught.value)
    assert KEY not in repr(caught.value.errors())


@pytest.mark.parametrize(
    "env",
    [
        {"AGENTMESH_LLM_API_KEY": KEY},  # no provider
        {"AGENTMESH_LLM_API_KEY": KEY, "AGENTMESH_LLM_PROVIDER": "openai"},  # no model
        {
            "AGENTMESH_LLM_API_KEY": KEY,
            "AGENTMESH_LLM_PROVIDERS": '[{"kind": "openai", "model": "m"}]',
        },
        {
            "AGENTMESH_LLM_PROVIDERS": (
                f'[{{"kind": "openai", "model": "m", "api_key": "{KEY}"}},'
                f' {{"kind": "openai", "model": "m", "api_key": "{KEY}"}}]'
            )
        },
    ],
)
def test_settings_errors_do_not_echo_the_key(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(pydantic.ValidationError) as caught:
        LLMSettings()
    assert KEY not in str(caught.value)
    assert KEY not in repr(caught.value.errors())


async def test_client_from_settings_with_a_key_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTMESH_LLM_PROVIDER", "anthropic")
    monkeypatch.setenv("AGENTMESH_LLM_MODEL", "claude-sonnet-4-20250514")
    monkeypatch.setenv("AGENTMESH_LLM_API_KEY", KEY)
    async with LLMClient() as client:
        assert client.configured
        assert KEY not in repr(client)
        assert KEY not in repr(client.providers)


async def test_spans_describe_each_provider_call_without_the_key(
    fake_llm: FakeLLMServer, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(llm_http, "_tracer", tracer_provider.get_tracer("test"))
    fake_llm.reply_status(500, f"trouble for key {KEY}")
    fake_llm.reply_status(401, f"Incorrect API key provided: {KEY}")
    fake_llm.reply_text(chunks=["po", "ng"])
    failing = fake_llm.config("openai", api_key=KEY, max_retries=1, backoff_initial=0)
    answering = fake_llm.config("anthropic", api_key=KEY)
    client = make_client(failing, answering)

    text = "".join([chunk.text async for chunk in client.stream(REQUEST)])
    fake_llm.reply_text("done")
    whole = await client.complete(REQUEST)

    assert (text, whole.text) == ("pong", "done")
    first, second, third = exporter.get_finished_spans()
    assert first.name == f"chat {failing.model}"
    assert first.attributes is not None
    assert first.attributes["agentmesh.llm.provider"] == failing.name
    assert first.attributes["error.type"] == "AuthError"
    assert first.attributes["http.response.status_code"] == 401
    assert first.attributes["agentmesh.llm.tries"] == 2
    assert first.status.status_code == StatusCode.ERROR
    assert second.attributes is not None
    assert second.attributes["gen_ai.system"] == "anthropic"
    assert second.attributes["gen_ai.usage.input_tokens"] == 11
    assert second.attributes["gen_ai.usage.output_tokens"] == 7
    assert third.attributes is not None
    assert third.attributes["agentmesh.llm.stream"] is False
    assert third.attributes["gen_ai.response.model"] == failing.model
    assert third.attributes["gen_ai.usage.output_tokens"] == 7
    for span in (first, second, third):
        exported = [
            span.name,
            str(span.status.description),
            *map(str, (span.attributes or {}).values()),
        ]
        assert not [value for value in exported if KEY in value]
