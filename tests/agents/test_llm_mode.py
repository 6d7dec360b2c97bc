"""The agents in LLM mode, served for real behind the gateway, against a real HTTP
server on 127.0.0.1 speaking the OpenAI and Anthropic wire formats."""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import subprocess
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from meshtest import free_port, health_status, running_mesh, service_env, wait_until
from prometheus_client import REGISTRY

from agentmesh.agents.assistant.agent import AssistantAgent
from agentmesh.agents.code_reviewer.agent import CodeReviewerAgent
from agentmesh.agents.qa.agent import QAAgent
from agentmesh.agents.summarizer.agent import SummarizerAgent
from agentmesh.client import AsyncClient, CallError, Final, Partial, Started
from agentmesh.llm import LLMClient, LLMSettings
from agentmesh.runtime import Agent, DataPart, InvalidInput, Message, Request, TextPart
from agentmesh.v1 import agent_pb2_grpc
from agentmesh.v1 import messages_pb2 as pb

if TYPE_CHECKING:
    from llm.fakellm import FakeLLMServer, MakeClient, SleepRecorder

KINDS = ["openai", "anthropic"]
ARTICLE = (
    "Solar power capacity grew faster than any other energy source last year. "
    "Cheap panels made from silicon drove most of that growth. "
    "Analysts expect solar capacity to keep growing as panel prices fall further."
)
#: USD per million prompt and completion tokens of the fake server's default models.
PRICES = {"openai": (0.15, 0.60), "anthropic": (0.80, 4.00)}
RISKY_CODE = "import os\nx = eval(input())\n"


@contextlib.asynccontextmanager
async def gateway_to(agent: Agent) -> AsyncIterator[AsyncClient]:
    async with running_mesh(agent) as served, AsyncClient(served.address, timeout=10) as client:
        yield client


async def call(client: AsyncClient, target: str, text: str, *, streamed: bool) -> None:
    """Invoke ``target``, unary or streamed to the end."""
    if streamed:
        _ = [event async for event in client.stream(target, text)]
    else:
        await client.invoke(target, text)


def system_prompt(fake_llm: FakeLLMServer, index: int = 0) -> str:
    """The system prompt of the ``index``-th request the fake server received."""
    body = fake_llm.requests[index].json
    if "system" in body:  # Anthropic
        return str(body["system"])
    return str(next(m["content"] for m in body["messages"] if m["role"] == "system"))


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize("kind", KINDS)
async def test_model_tokens_reach_the_client_one_by_one_as_the_provider_sends_them(
    kind: str, fake_llm: FakeLLMServer, make_client: MakeClient
) -> None:
    # The provider sends one token, then holds the rest until the test has that token.
    held = threading.Event()
    fake_llm.reply_text(chunks=["Solar ", "keeps ", "growing."], gate=held, gate_after=1)
    config = fake_llm.config(kind)
    model = config.model
    tokens_before = metric(
        "agentmesh_llm_tokens_total", provider=config.name, model=model, kind="completion"
    )

    async with gateway_to(SummarizerAgent(make_client(config))) as client:
        events = client.stream(
            "summarizer", ARTICLE, options={"sentences": 2}, metadata={"audience": "engineers"}
        )
        assert isinstance(await anext(events), Started)
        first = await anext(events)
        assert isinstance(first, Partial)
        assert first.parts == (TextPart("Solar "),)
        assert not held.is_set()  # the rest of the answer has not been sent yet
        held.set()
        rest = [event async for event in events]

    assert [e.parts for e in rest if isinstance(e, Partial)] == [
        (TextPart("keeps "),),
        (TextPart("growing."),),
    ]
    final = rest[-1]
    assert isinstance(final, Final)
    reply = final.reply
    assert reply.text == "Solar keeps growing."
    assert reply.data["summary"] == "Solar keeps growing."
    assert reply.data["extractive"]["sentence_count"] == 3
    prompt_price, completion_price = PRICES[kind]
    assert reply.usage.prompt_tokens == 11
    assert reply.usage.completion_tokens == 7
    assert reply.usage.cost_usd == pytest.approx((11 * prompt_price + 7 * completion_price) / 1e6)
    assert reply.usage.model == model
    llm = reply.metadata["llm"]
    assert llm["provider"] == config.name
    assert llm["model"] == model
    assert (llm["prompt_tokens"], llm["completion_tokens"], llm["total_tokens"]) == (11, 7, 18)
    assert llm["estimated"] is False
    # The role prompt was templated from the options and the request's metadata.
    prompt = system_prompt(fake_llm)
    assert "at most 2 sentences for engineers" in prompt
    assert fake_llm.requests[0].json["stream"] is True
    tokens_after = metric(
        "agentmesh_llm_tokens_total", provider=config.name, model=model, kind="completion"
    )
    assert tokens_after - tokens_before == 7


@pytest.mark.parametrize("kind", KINDS)
async def test_rate_limit_is_waited_out_for_retry_after_then_answered(
    kind: str, fake_llm: FakeLLMServer, make_client: MakeClient, sleeps: SleepRecorder
) -> None:
    fake_llm.reply_status(429, "slow down", headers={"Retry-After": "7"})
    fake_llm.reply_text("Hello from the model.")
    config = fake_llm.config(kind, backoff_initial=0.1)
    limited_before = metric(
        "agentmesh_llm_requests_total",
        provider=config.name,
        model=config.model,
        outcome="rate_limited",
    )

    async with gateway_to(AssistantAgent(make_client(config))) as client:
        reply = await client.invoke("assistant", "Say hello.")

    assert reply.text == "Hello from the model."
    assert sleeps.delays == [7.0]  # the server's Retry-After, not the 0.1 s backoff
    assert len(fake_llm.requests) == 2
    [attempt] = reply.metadata["llm"]["attempts"]
    assert (attempt["provider"], attempt["outcome"], attempt["tries"]) == (config.name, "ok", 2)
    limited_after = metric(
        "agentmesh_llm_requests_total",
        provider=config.name,
        model=config.model,
        outcome="rate_limited",
    )
    assert limited_after - limited_before == 1


@pytest.mark.parametrize(("first", "second"), [("openai", "anthropic"), ("anthropic", "openai")])
async def test_server_error_falls_back_to_the_next_provider_which_is_reported(
    first: str, second: str, fake_llm: FakeLLMServer, make_client: MakeClient
) -> None:
    fake_llm.reply_status(500, "internal trouble")
    fake_llm.reply_text("Cheap silicon panels.")
    failing, answering = fake_llm.config(first, max_retries=0), fake_llm.config(second)

    async with gateway_to(QAAgent(make_client(failing, answering))) as client:
        reply = await client.invoke(
            "qa", ARTICLE, options={"question": "What drove the growth of solar?"}
        )

    assert reply.text == "Cheap silicon panels."
    assert reply.data["supporting"][0]["text"].startswith("Cheap panels")
    llm = reply.metadata["llm"]
    assert llm["provider"] == answering.name
    assert [(a["provider"], a["outcome"], a["status"]) for a in llm["attempts"]] == [
        (failing.name, "failed", 500),
        (answering.name, "ok", None),
    ]
    assert "HTTP 500" in llm["attempts"][0]["error"]
    # Each provider got the request in its own wire format, question and context included.
    paths = [r.path for r in fake_llm.requests]
    assert paths[0].endswith("/chat/completions" if first == "openai" else "/v1/messages")
    assert paths[1].endswith("/chat/completions" if second == "openai" else "/v1/messages")
    assert "What drove the growth of solar?" in fake_llm.requests[1].body.decode()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("streamed", [False, True])
async def test_rejected_key_is_failed_precondition_not_retried_and_never_echoed(
    kind: str,
    streamed: bool,
    fake_llm: FakeLLMServer,
    make_client: MakeClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, httpx's included
    # A 500 echoing the key is retried (and logged); the 401 that follows is final.
    fake_llm.reply_status(500, f"trouble with key {fake_llm.api_key}")
    fake_llm.reply_status(401, f"Incorrect API key provided: {fake_llm.api_key}")
    config = fake_llm.config(kind, max_retries=1, backoff_initial=0)

    async with gateway_to(SummarizerAgent(make_client(config))) as client:
        with pytest.raises(CallError) as caught:
            await call(client, "summarizer", ARTICLE, streamed=streamed)

    assert caught.value.code.name == "FAILED_PRECONDITION"
    assert f"provider {config.name!r} rejected the API key (HTTP 401)" in caught.value.message
    assert len(fake_llm.requests) == 2  # the 401 was not retried
    assert (
        fake_llm.requests[0]
        .headers.get("authorization" if kind == "openai" else "x-api-key", "")
        .endswith(fake_llm.api_key)
    )
    assert "retry 1 of 1" in caplog.text
    assert fake_llm.api_key not in caplog.text
    assert fake_llm.api_key not in str(caught.value)


async def test_provider_that_hangs_ends_at_the_callers_deadline(
    fake_llm: FakeLLMServer, make_client: MakeClient
) -> None:
    fake_llm.reply_hang()
    async with gateway_to(AssistantAgent(make_client(fake_llm.config()))) as client:
        with pytest.raises(CallError) as caught:
            await client.invoke("assistant", "Are you there?", timeout=0.5)
    assert caught.value.code.name == "DEADLINE_EXCEEDED"


def _review_json(explanation: str) -> str:
    return json.dumps(
        {
            "overview": "Runs whatever the user types.",
            "notes": [{"finding": 1, "explanation": explanation, "suggestion": "literal_eval"}],
        }
    )


@pytest.mark.parametrize("kind", KINDS)
async def test_malformed_review_is_repaired_once_and_usage_covers_both_calls(
    kind: str, fake_llm: FakeLLMServer, make_client: MakeClient
) -> None:
    fake_llm.reply_text('Here is my review: {"overview": "Runs whatever", notes: [}')
    fake_llm.reply_text(f"```json\n{_review_json('eval runs arbitrary input.')}\n```")
    config = fake_llm.config(kind)

    async with gateway_to(CodeReviewerAgent(make_client(config))) as client:
        reply = await client.invoke("code-reviewer", RISKY_CODE)

    # The static findings stay; the model's explanation is added to them.
    finding = reply.data["findings"][0]
    assert (finding["line"], finding["severity"]) == (2, "high")
    assert finding["explanation"] == "eval runs arbitrary input."
    assert finding["suggestion"] == "literal_eval"
    assert reply.data["overview"] == "Runs whatever the user types."
    assert "<input>:2:" in reply.text
    assert "line 2 [" in reply.text
    assert "eval runs arbitrary input." in reply.text
    # Two calls: the repair quoted the bad reply and named what was wrong.
    assert len(fake_llm.requests) == 2
    repair = fake_llm.requests[1].json["messages"]
    assert repair[-2]["role"] == "assistant"
    assert "could not be used" in repair[-1]["content"]
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (22, 14)
    prompt_price, completion_price = PRICES[kind]
    assert reply.usage.cost_usd == pytest.approx((22 * prompt_price + 14 * completion_price) / 1e6)
    assert reply.metadata["llm"]["total_tokens"] == 36


async def test_review_still_malformed_after_the_repair_is_a_clear_error(
    fake_llm: FakeLLMServer, make_client: MakeClient
) -> None:
    fake_llm.reply_text("I think the code is fine.")
    fake_llm.reply_text('{"overview": ""}')

    async with gateway_to(CodeReviewerAgent(make_client(fake_llm.config()))) as client:
        with pytest.raises(CallError) as caught:
            await client.invoke("code-reviewer", RISKY_CODE)

    assert caught.value.code.name == "INTERNAL"
    assert "model output did not match schema 'ModelReview' after one repair attempt" in (
        caught.value.message
    )
    assert "overview" in caught.value.message
    assert len(fake_llm.requests) == 2


async def test_assistant_without_a_model_is_failed_precondition_naming_the_settings() -> None:
    async with gateway_to(AssistantAgent()) as client:
        with pytest.raises(CallError) as unary:
            await call(client, "assistant", "Hello?", streamed=False)
        with pytest.raises(CallError) as streamed:
            await call(client, "assistant", "Hello?", streamed=True)
    for caught in (unary, streamed):
        assert caught.value.code.name == "FAILED_PRECONDITION"
        assert "agent 'assistant' needs a language model" in caught.value.message
        assert "AGENTMESH_LLM_PROVIDER" in caught.value.message


async def test_agents_stay_offline_when_no_provider_is_configured(
    fake_llm: FakeLLMServer,
) -> None:
    agent = SummarizerAgent(LLMClient(LLMSettings()))
    result = await agent.invoke(Request(skill="summarize", message=_text(ARTICLE)))
    assert result.data["sentence_count"] == 3  # TextRank's answer
    assert not result.metadata
    assert not fake_llm.requests


async def test_role_prompt_from_settings_is_templated_from_request_metadata(
    fake_llm: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = fake_llm.config("anthropic")
    monkeypatch.setenv("AGENTMESH_LLM_PROVIDER", "anthropic")
    monkeypatch.setenv("AGENTMESH_LLM_MODEL", config.model)
    monkeypatch.setenv("AGENTMESH_LLM_BASE_URL", config.base_url)
    monkeypatch.setenv("AGENTMESH_LLM_API_KEY", fake_llm.api_key)
    # A placeholder of the operator's own must be declared: ${team} alone stops the agent.
    monkeypatch.setenv("AGENTMESH_LLM_PROMPTS", '{"assistant": "You are ${persona} for ${team}."}')
    with pytest.raises(SystemExit) as undeclared:
        await AssistantAgent().startup()
    assert str(undeclared.value) == (
        "assistant: AGENTMESH_LLM_PROMPTS: prompts['assistant']: system template: unknown "
        "placeholder(s) ${team} (known: agent, language, persona, skill, text; declare one "
        "under variables to fill it from the request's metadata)"
    )
    prompts = {
        "assistant": {"system": "You are ${persona} for ${team}.", "variables": {"team": None}}
    }
    monkeypatch.setenv("AGENTMESH_LLM_PROMPTS", json.dumps(prompts))
    fake_llm.reply_text("Noted.")
    agent = AssistantAgent()
    await agent.startup()
    try:
        earlier = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
        message = Message(
            parts=(TextPart("Who are you?"), DataPart({"history": earlier})),
            metadata={"team": "payments", "persona": "a pirate"},
        )
        result = await agent.invoke(Request(skill="chat", message=message))
        assert result.text == "Noted."
        body = fake_llm.requests[0].json
        assert body["system"] == "You are a pirate for payments."
        assert [m["content"] for m in body["messages"]] == ["Hi", "Hello", "Who are you?"]

        with pytest.raises(InvalidInput) as missing:
            await agent.invoke(Request(skill="chat", message=_text("Who are you?")))
        assert missing.value.field == "message.metadata.team"
        assert "required by the prompt of skill 'chat'" in missing.value.problem
    finally:
        await agent.shutdown()
    assert len(fake_llm.requests) == 1  # the refused request never reached the provider


def _text(text: str, *, metadata: dict[str, Any] | None = None) -> Message:
    return Message(parts=(TextPart(text),), metadata=metadata or {})


@pytest.mark.slow
async def test_assistant_process_reads_its_key_from_a_file_and_never_logs_it(
    fake_llm: FakeLLMServer, spawn: Callable[..., subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    key_file = tmp_path / "llm-key"
    key_file.write_text(fake_llm.api_key + "\n")
    provider = {
        "kind": "openai",
        "model": "gpt-4o-mini",
        "base_url": f"{fake_llm.url}/v1",
        "api_key_file": str(key_file),
        "backoff_initial": 0,
    }
    port = free_port()
    process = spawn(
        "-m", "agentmesh.agents.assistant", "--port", str(port), "--log-level", "DEBUG",
        env=service_env(AGENTMESH_LLM_PROVIDERS=json.dumps([provider])),
    )  # fmt: skip
    address = f"127.0.0.1:{port}"
    await wait_until(lambda: _serving(address))
    # Both provider errors quote the key back; neither may reach a log or the caller.
    fake_llm.reply_status(500, f"overloaded for key {fake_llm.api_key}")
    fake_llm.reply_text("Hello.")
    fake_llm.reply_status(401, f"Incorrect API key provided: {fake_llm.api_key}")
    async with grpc.aio.insecure_channel(address) as channel:
        stub = agent_pb2_grpc.AgentStub(channel)
        request = pb.InvokeRequest(message=pb.Message(parts=[pb.Part(text="Hi")]))
        reply = await stub.Invoke(request, timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as rejected:
            await stub.Invoke(request, timeout=10)

    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=20)[0].decode()
    assert reply.artifacts[0].parts[0].text == "Hello."
    assert fake_llm.requests[0].headers["authorization"] == f"Bearer {fake_llm.api_key}"
    assert rejected.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "rejected the API key" in (rejected.value.details() or "")
    assert fake_llm.api_key not in (rejected.value.details() or "")
    assert "LLM mode" in output
    assert "[REDACTED]" in output  # the 500's detail was logged with the retry, scrubbed
    assert fake_llm.api_key not in output


async def _serving(address: str) -> bool:
    try:
        return await health_status(address) == int(health_pb2.HealthCheckResponse.SERVING)
    except grpc.aio.AioRpcError:
        return False


async def test_an_overlong_metadata_value_is_refused_naming_its_key(
    fake_llm: FakeLLMServer, make_client: MakeClient
) -> None:
    agent = AssistantAgent(make_client(fake_llm.config()))
    message = _text("Hi", metadata={"persona": "x" * 2_001, "nested": {"ignored": True}})
    with pytest.raises(InvalidInput) as caught:
        await agent.invoke(Request(skill="chat", message=message))
    assert caught.value.field == "message.metadata.persona"
    assert not fake_llm.requests


async def test_bad_llm_settings_stop_the_agent_at_startup_without_echoing_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENTMESH_LLM_API_KEY", "sk-should-not-show-4242")
    with pytest.raises(SystemExit) as caught:
        await AssistantAgent().startup()
    message = str(caught.value)
    assert message.startswith("assistant: invalid AGENTMESH_LLM_* settings:")
    assert "provider (AGENTMESH_LLM_PROVIDER" in message
    assert "sk-should-not-show-4242" not in message
