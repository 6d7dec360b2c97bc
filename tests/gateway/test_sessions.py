"""Conversations kept by the gateway: the assistant (a real agent, answering through a real
HTTP server speaking the OpenAI and Anthropic wire formats) receives a session's earlier
turns, compacted by the real summarizer, from any gateway sharing the store."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from llm.fakellm import FakeLLMServer, MakeClient
from llm.fakellm import clean_llm_env as clean_llm_env
from llm.fakellm import fake_llm as fake_llm
from llm.fakellm import llm_server_factory as llm_server_factory
from llm.fakellm import make_client as make_client
from llm.fakellm import sleeps as sleeps
from meshtest import running_agent

from agentmesh.agents.assistant.agent import AssistantAgent
from agentmesh.agents.summarizer.agent import SummarizerAgent
from agentmesh.client import AsyncClient, CallError, Final
from agentmesh.gateway.app import Gateway
from agentmesh.gateway.auth import hash_key
from agentmesh.gateway.config import AgentConfig, GatewayConfig, GatewaySettings, SessionConfig
from agentmesh.gateway.sessions import SUMMARY_PREFIX

KINDS = ["openai", "anthropic"]
ALICE, BOB = "am_alice_key", "am_bob_key"


def provider_turns(fake_llm: FakeLLMServer, index: int) -> list[tuple[str, str]]:
    """The (role, text) turns of the ``index``-th provider request, system prompt left out."""
    turns = []
    for message in fake_llm.requests[index].json["messages"]:
        content = message["content"]
        if isinstance(content, list):  # Anthropic content blocks
            content = "".join(block.get("text", "") for block in content)
        if message["role"] != "system":
            turns.append((message["role"], content))
    return turns


@contextlib.asynccontextmanager
async def gateways(
    agents: dict[str, str], count: int = 1, **settings: Any
) -> AsyncIterator[list[str]]:
    """``count`` gateways knowing ``agents`` (name -> address), with ``settings``."""
    config = GatewayConfig(
        agents={name: AgentConfig(addresses=[address]) for name, address in agents.items()},
        sessions=SessionConfig(max_turns=4, keep_last=2),
    )
    async with contextlib.AsyncExitStack() as stack:
        addresses = []
        for _ in range(count):
            gateway = Gateway(GatewaySettings(port=0, **settings), config)
            port = await gateway.start()
            stack.push_async_callback(gateway.stop, 0)
            addresses.append(f"127.0.0.1:{port}")
        yield addresses


@contextlib.asynccontextmanager
async def conversation_mesh(
    llm_client: Any, count: int = 1, **settings: Any
) -> AsyncIterator[list[str]]:
    async with (
        running_agent(AssistantAgent(llm_client)) as (_, assistant),
        running_agent(SummarizerAgent()) as (_, summarizer),
        gateways({"assistant": assistant, "summarizer": summarizer}, count, **settings) as found,
    ):
        yield found


@pytest.mark.parametrize("kind", KINDS)
async def test_the_second_turn_carries_the_first_and_its_answer(
    kind: str, fake_llm: FakeLLMServer, make_client: MakeClient
) -> None:
    fake_llm.reply_text("Nice to meet you, Ada.")
    fake_llm.reply_text("Your name is Ada.")
    async with (
        conversation_mesh(make_client(fake_llm.config(kind))) as [address],
        AsyncClient(address, timeout=10) as client,
    ):
        first = await client.invoke("assistant", "My name is Ada.", context_id="c1")
        assert first.text == "Nice to meet you, Ada."
        events = [e async for e in client.stream("assistant", "What is my name?", context_id="c1")]
        final = events[-1]
        assert isinstance(final, Final)
        assert final.reply.text == "Your name is Ada."
        # Without a context id, a call is stateless as before.
        fake_llm.reply_text("Hello.")
        await client.invoke("assistant", "Hi")
        session = await client.session("c1")
    assert provider_turns(fake_llm, 0) == [("user", "My name is Ada.")]
    assert provider_turns(fake_llm, 1) == [
        ("user", "My name is Ada."),
        ("assistant", "Nice to meet you, Ada."),
        ("user", "What is my name?"),
    ]
    assert provider_turns(fake_llm, 2) == [("user", "Hi")]
    assert [(t.role, t.content) for t in session.turns] == [
        ("user", "My name is Ada."),
        ("assistant", "Nice to meet you, Ada."),
        ("user", "What is my name?"),
        ("assistant", "Your name is Ada."),
    ]
    assert session.turn_count == 2
    assert session.agent == "assistant"


@pytest.mark.parametrize("kind", KINDS)
async def test_past_max_turns_older_turns_become_one_summary(
    kind: str, fake_llm: FakeLLMServer, make_client: MakeClient
) -> None:
    questions = [f"Fact {n}: the {n} box holds {n} red marbles." for n in range(1, 7)]
    for n in range(1, 7):
        fake_llm.reply_text(f"Noted fact {n}.")
    async with (
        conversation_mesh(make_client(fake_llm.config(kind))) as [address],
        AsyncClient(address, timeout=10) as client,
    ):
        compactions = []
        for question in questions:
            await client.invoke("assistant", question, context_id="long")
            compactions.append((await client.session("long")).compactions)
        session = await client.session("long")
    # max_turns 4, keep_last 2: the sixth turn finds five exchanges and summarizes three.
    assert compactions == [0, 0, 0, 0, 0, 1]
    sixth = provider_turns(fake_llm, 5)
    assert sixth[0][0] == "user"
    assert sixth[0][1].startswith(SUMMARY_PREFIX)
    assert "Fact 1" in sixth[0][1] or "Fact 2" in sixth[0][1] or "Fact 3" in sixth[0][1]
    assert sixth[1:] == [
        ("user", questions[3]),
        ("assistant", "Noted fact 4."),
        ("user", questions[4]),
        ("assistant", "Noted fact 5."),
        ("user", questions[5]),
    ]
    assert session.summary
    assert session.turn_count == 6
    assert [t.content for t in session.turns if t.role == "user"] == questions[3:]


async def test_a_second_gateway_on_the_same_redis_continues_the_session(
    fake_llm: FakeLLMServer, make_client: MakeClient, redis_db: str
) -> None:
    fake_llm.reply_text("Blue it is.")
    fake_llm.reply_text("You chose blue.")
    async with conversation_mesh(make_client(fake_llm.config()), 2, redis_url=redis_db) as [
        one,
        two,
    ]:
        async with AsyncClient(one, timeout=10) as client:
            await client.invoke("assistant", "I choose blue.", context_id="shared")
        async with AsyncClient(two, timeout=10) as client:
            reply = await client.invoke("assistant", "What did I choose?", context_id="shared")
            listed = await client.sessions()
    assert reply.text == "You chose blue."
    assert provider_turns(fake_llm, 1) == [
        ("user", "I choose blue."),
        ("assistant", "Blue it is."),
        ("user", "What did I choose?"),
    ]
    assert [s.context_id for s in listed] == ["shared"]
    assert listed[0].turns == ()


def _keys(tmp_path: Path) -> Path:
    everything = {"agents": ["*"], "skills": ["*"], "workflows": ["*"]}
    path = tmp_path / "keys.yaml"
    keys = [
        {"id": name, "hash": hash_key(key), "scopes": everything}
        for name, key in (("alice", ALICE), ("bob", BOB))
    ]
    path.write_text(yaml.safe_dump({"keys": keys}))
    return path


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_another_key_gets_not_found_and_its_own_session(
    store: str,
    fake_llm: FakeLLMServer,
    make_client: MakeClient,
    tmp_path: Path,
    redis_db: str,
) -> None:
    settings: dict[str, Any] = {"auth_required": True, "auth_keys_file": _keys(tmp_path)}
    if store == "redis":
        settings["redis_url"] = redis_db
    fake_llm.reply_text("Secret kept.")
    fake_llm.reply_text("I know nothing yet.")
    async with (
        conversation_mesh(make_client(fake_llm.config()), **settings) as [address],
        AsyncClient(address, timeout=10, api_key=ALICE) as alice,
        AsyncClient(address, timeout=10, api_key=BOB) as bob,
    ):
        await alice.invoke("assistant", "The code word is heron.", context_id="private")
        for call in (bob.session("private"), bob.delete_session("private")):
            with pytest.raises(CallError) as refused:
                await call
            assert refused.value.code == grpc.StatusCode.NOT_FOUND
            assert refused.value.message == "no session 'private'"
        assert await bob.sessions() == []
        # Bob naming the same context id starts his own conversation, without Alice's turns.
        await bob.invoke("assistant", "What is the code word?", context_id="private")
        assert provider_turns(fake_llm, 1) == [("user", "What is the code word?")]
        assert len((await alice.session("private")).turns) == 2
        await alice.delete_session("private")
        with pytest.raises(CallError) as gone:
            await alice.session("private")
        assert gone.value.code == grpc.StatusCode.NOT_FOUND
        with pytest.raises(CallError) as empty:
            await alice.session("")
        assert empty.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "context_id" in empty.value.message
