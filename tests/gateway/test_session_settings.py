"""Sessions under concurrency and per route: two turns of one session sent at once both land
(a compare-and-set on the session's version, in memory and in a real Redis), and a declared
route overrides the session settings of the agent it sends to, or keeps no session."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from meshtest import running_agent

from agentmesh.agents._history import earlier_turns
from agentmesh.agents.summarizer.agent import SummarizerAgent
from agentmesh.client import AsyncClient, CallError
from agentmesh.gateway import Gateway, GatewayConfig, GatewaySettings
from agentmesh.gateway.config import AgentConfig, ConfigError, load_config
from agentmesh.gateway.sessions import SUMMARY_PREFIX
from agentmesh.runtime import Agent, AgentCard, Request, Result, Skill


class Listener(Agent):
    """Takes history; records the turns each call received. With ``together`` set, a call
    answers only once that many calls are under way at the same time."""

    card = AgentCard(name="listener", description="test", skills=(Skill(id="hear"),),
                     takes_history=True)  # fmt: skip

    def __init__(self, together: int = 1) -> None:
        self.heard: list[list[tuple[str, str]]] = []
        self._together = together
        self._arrived = 0
        self._all_here = asyncio.Event()

    async def invoke(self, request: Request) -> Result:
        self.heard.append([(t.role, t.content) for t in earlier_turns(request.message)])
        self._arrived += 1
        if self._arrived >= self._together:
            self._all_here.set()
        await asyncio.wait_for(self._all_here.wait(), 15)
        return Result.of(text=f"heard {request.text}")


@contextlib.asynccontextmanager
async def mesh(
    listener: Listener, routes: list[dict[str, Any]] | None = None, **settings: Any
) -> AsyncIterator[AsyncClient]:
    async with contextlib.AsyncExitStack() as stack:
        agents = {}
        for agent in (listener, SummarizerAgent()):
            _, address = await stack.enter_async_context(running_agent(agent))
            agents[agent.card.name] = AgentConfig(addresses=[address])
        config = GatewayConfig.model_validate({"agents": agents, "routes": routes or []})
        gateway = Gateway(GatewaySettings(port=0, **settings), config)
        port = await gateway.start()
        stack.push_async_callback(gateway.stop, 0)
        yield await stack.enter_async_context(AsyncClient(f"127.0.0.1:{port}"))


async def test_two_turns_of_one_session_sent_at_once_both_land(
    store_settings: dict[str, Any],
) -> None:
    listener = Listener(together=2)
    async with mesh(listener, **store_settings) as client:
        await asyncio.gather(
            client.invoke("listener", "first", context_id="together"),
            client.invoke("listener", "second", context_id="together"),
        )
        await client.invoke("listener", "third", context_id="together")
        session = await client.session("together")
    assert listener.heard[:2] == [[], []]  # both began before either was recorded
    assert session.turn_count == 3
    users = [t.content for t in session.turns if t.role == "user"]
    assert sorted(users[:2]) == ["first", "second"]
    assert users[2] == "third"
    assert sorted(content for _, content in listener.heard[2]) == sorted(
        ["first", "heard first", "second", "heard second"]
    )


ROUTES: list[dict[str, Any]] = [
    {"name": "quiet", "match": {"keywords": ["whisper"]}, "to": {"agent": "listener"},
     "history": False},
    {"name": "brief", "match": {"keywords": ["brief"]}, "to": {"agent": "listener"},
     "session": {"max_turns": 1, "keep_last": 0}},
]  # fmt: skip


async def test_a_route_keeps_no_session_or_overrides_its_settings() -> None:
    listener = Listener()
    async with mesh(listener, ROUTES) as client:
        for n in range(2):
            await client.invoke(None, f"whisper {n}", context_id="quiet-one")
        with pytest.raises(CallError, match="no session"):
            await client.session("quiet-one")
        quiet = list(listener.heard)
        listener.heard.clear()
        for n in range(3):
            await client.invoke(None, f"brief {n}", context_id="brief-one")
        brief = await client.session("brief-one")
        # The agent's own setting (the default, 40 turns) still holds when named directly.
        for n in range(3):
            await client.invoke("listener", f"direct {n}", context_id="direct-one")
        direct = await client.session("direct-one")
    assert quiet == [[], []]
    # Past one exchange the route's policy summarizes everything older (keep_last 0).
    assert listener.heard[2][0][1].startswith(SUMMARY_PREFIX)
    assert len(listener.heard[2]) == 1
    assert brief.compactions == 1
    assert direct.compactions == 0
    assert len(listener.heard[5]) == 4


@pytest.mark.parametrize(
    ("route", "fragment"),
    [
        ("session: {max_turns: 0}", "routes.0.session.max_turns"),
        ("session: {colour: red}", "routes.0.session.colour"),
        ("session: {summarizer: nobody}", "summarizer 'nobody' must be AGENT/SKILL"),
        ("history: maybe", "routes.0.history"),
        ("history: false\n    session: {max_turns: 3}", "session settings do nothing"),
    ],
)
def test_route_session_settings_are_checked_at_load(
    tmp_path: Path, route: str, fragment: str
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "agents:\n  listener:\n    address: a:1\n"
        "routes:\n  - name: r\n    match: {keywords: [hi]}\n    to: {agent: listener}\n"
        f"    {route}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert fragment in str(info.value)
