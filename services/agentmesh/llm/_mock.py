"""The ``mock`` provider kind: a model that answers offline, for demos and first steps.

It starts a :class:`~agentmesh.llm._fake_server.FakeModelServer` on 127.0.0.1
in the agent's own process and talks to it in the OpenAI wire format, so the
whole provider path (HTTP, streaming, usage, retries) runs as with a real
model. Every answer is :func:`~agentmesh.llm._fake_server.mock_reply`:
"(mock model) You said: ..." (``{}`` in JSON mode)::

    AGENTMESH_LLM_PROVIDER=mock agentmesh up
"""

from __future__ import annotations

import random
from typing import ClassVar

import httpx

from agentmesh.llm._fake_server import FakeModelServer, mock_reply
from agentmesh.llm._openai import OpenAIProvider
from agentmesh.llm._pricing import PriceTable
from agentmesh.llm._settings import ProviderConfig
from agentmesh.runtime.resilience import SleepFn


class MockProvider(OpenAIProvider):
    """An OpenAI-format provider whose server is an in-process fake model."""

    kind: ClassVar[str] = "mock"

    def __init__(
        self,
        config: ProviderConfig,
        *,
        prices: PriceTable | None = None,
        sleep: SleepFn | None = None,
        rng: random.Random | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._server = FakeModelServer(default=mock_reply)
        served = config.model_copy(update={"base_url": f"{self._server.url}/v1"})
        super().__init__(served, prices=prices, sleep=sleep, rng=rng, transport=transport)

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            self._server.close()
