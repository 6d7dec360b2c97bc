"""The ``mock`` provider kind: the assistant answers with no network and no key."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable

import pytest
from meshtest import free_port, running_gateway, service_env, serving

from agentmesh.client import AsyncClient, Final, Partial
from agentmesh.llm import LLMSettings


def test_mock_needs_no_model_url_or_key() -> None:
    settings = LLMSettings(provider="mock")
    assert settings.configured
    (provider,) = settings.providers
    assert (provider.kind, provider.model, provider.api_key) == ("mock", "mock", None)


@pytest.mark.slow
async def test_the_assistant_answers_offline_with_the_mock_provider(
    spawn: Callable[..., subprocess.Popen[bytes]],
) -> None:
    port = free_port()
    process = spawn(
        "-m", "agentmesh.agents.assistant", "--port", str(port),
        env=service_env(AGENTMESH_LLM_PROVIDER="mock"),
    )  # fmt: skip
    address = f"127.0.0.1:{port}"
    await serving(address)
    async with running_gateway({"assistant": [address]}) as (_, gateway):
        async with AsyncClient(gateway, timeout=20) as client:
            reply = await client.invoke("assistant", "What does a circuit breaker do?")
            events = [e async for e in client.stream("assistant", "Say hi")]
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert reply.text == "(mock model) You said: What does a circuit breaker do?"
    assert reply.usage.model == "mock"
    assert reply.metadata["llm"]["provider"] == "mock:mock"
    assert any(isinstance(e, Partial) for e in events)
    final = events[-1]
    assert isinstance(final, Final)
    assert final.reply.text == "(mock model) You said: Say hi"
