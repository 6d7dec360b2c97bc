"""The fixtures around the fake model server of the public testing kit
(:class:`agentmesh.testing.FakeModel`).

The fixtures are imported by the conftest files of the LLM and the agent tests.

"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from agentmesh.llm import LLMClient, LLMSettings, ProviderConfig
from agentmesh.llm._fake_server import API_KEY, WAIT_LIMIT
from agentmesh.testing import FakeModel, RecordedRequest

FakeLLMServer = FakeModel

__all__ = ["API_KEY", "WAIT_LIMIT", "FakeLLMServer", "RecordedRequest"]


# -- fixtures -------------------------------------------------------------------------------


class SleepRecorder:
    """An injectable ``sleep`` that records each delay and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


MakeClient = Callable[..., LLMClient]


@pytest.fixture(autouse=True)
def clean_llm_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests must not see the developer's AGENTMESH_LLM_* settings."""
    for name in list(os.environ):
        if name.upper().startswith("AGENTMESH_LLM_"):
            monkeypatch.delenv(name)


@pytest.fixture
def llm_server_factory() -> Iterator[Callable[[], FakeLLMServer]]:
    """Starts as many fake servers as a test needs; all are shut down afterwards."""
    servers: list[FakeLLMServer] = []

    def start() -> FakeLLMServer:
        server = FakeLLMServer()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()
    errors = [e for server in servers for e in server.unexpected_errors]
    assert not errors, f"the fake LLM server failed: {errors!r}"


@pytest.fixture
def fake_llm(llm_server_factory: Callable[[], FakeLLMServer]) -> FakeLLMServer:
    return llm_server_factory()


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
async def make_client(sleeps: SleepRecorder) -> AsyncIterator[MakeClient]:
    """``make_client(*configs, **settings)``: an LLMClient whose sleeps are recorded."""
    clients: list[LLMClient] = []

    def make(
        *configs: ProviderConfig, clock: Callable[[], float] = time.monotonic, **settings: Any
    ) -> LLMClient:
        client = LLMClient(
            LLMSettings(providers=list(configs), **settings),
            sleep=sleeps,
            rng=random.Random(1234),
            clock=clock,
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()
