"""The memory agent served for real behind real gateways: spaces owned by the principal the
gateway authenticated, a forged principal header ignored, spaces shared through Redis, and a
workflow that remembers, then recalls."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
import yaml
from meshtest import running_agent, running_gateway, running_mesh

from agentmesh.agents.memory.agent import MemoryAgent
from agentmesh.agents.memory.store import MemorySpaceStore, RedisSpaceStore, SpaceStore
from agentmesh.client import AsyncClient, CallError, Reply, WorkflowFinished
from agentmesh.gateway.auth import hash_key, new_key
from agentmesh.runtime import Agent, AgentCard, Request, Result, Skill
from agentmesh.runtime.principal import PRINCIPAL_HEADER, principal_from, principal_metadata
from agentmesh.v1 import agent_pb2_grpc
from agentmesh.v1 import messages_pb2 as pb

KEY_A, KEY_B = new_key(), new_key()
EVERYTHING = {"agents": ["*"], "skills": ["*"], "workflows": ["*"]}
FACTS = [
    "The heron nests by the river and eats small fish at dawn.",
    "Deploys happen on Tuesdays after the standup.",
    "The staging database is restored from backup every night.",
]


class WhoAmI(Agent):
    """Answers with the principal the gateway told it."""

    card = AgentCard(name="whoami", description="test agent", skills=(Skill(id="who"),))

    async def invoke(self, request: Request) -> Result:
        return Result.of(text=request.principal)


def _keys(tmp_path: Path) -> Path:
    path = tmp_path / "keys.yaml"
    keys = [
        {"id": "tenant-a", "hash": hash_key(KEY_A), "scopes": EVERYTHING},
        {"id": "tenant-b", "hash": hash_key(KEY_B), "scopes": EVERYTHING},
    ]
    path.write_text(yaml.safe_dump({"keys": keys}))
    return path


async def _code(call: Any) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except CallError as exc:
        return exc.code, exc.message
    return grpc.StatusCode.OK, ""


def _missing(what: str) -> tuple[grpc.StatusCode, str]:
    """How the gateway reports the agent's NOT_FOUND."""
    return grpc.StatusCode.NOT_FOUND, f"agent 'memory': {what}"


@contextlib.asynccontextmanager
async def redis_store(url: str) -> AsyncIterator[SpaceStore]:
    client = aioredis.Redis.from_url(url)
    try:
        yield RedisSpaceStore(client)
    finally:
        await client.aclose()


async def test_remember_recall_and_forget_through_the_gateway() -> None:
    async with running_mesh(MemoryAgent()) as mesh:
        client = mesh.client
        listed = {a.name: a for a in await client.list_agents()}
        assert listed["memory"].card is not None
        assert {s.id for s in listed["memory"].card.skills} == {"remember", "recall", "forget"}

        # The space defaults to the message's context id.
        ids = []
        for n, fact in enumerate(FACTS):
            reply = await client.invoke(
                "memory/remember", fact, context_id="ops", options={"tags": ["ops", f"n{n}"]}
            )
            assert reply.data["space"] == "ops"
            assert reply.data["entries"] == n + 1
            ids.append(reply.data["id"])
        found = await client.invoke("memory/recall", "when do we deploy?", context_id="ops")
        assert found.text == FACTS[1]
        hit = found.data["hits"][0]
        assert (hit["id"], hit["tags"]) == (ids[1], ["ops", "n1"])
        assert hit["score"] > 0

        # A named space is another space; tags filter; limit bounds the hits.
        await client.invoke("memory/remember", "Deploys are frozen in December.", options={
            "space": "calendar", "tags": ["freeze"]})  # fmt: skip
        in_calendar = await client.invoke(
            "memory/recall", "deploys", options={"space": "calendar", "limit": 5}
        )
        assert [h["text"] for h in in_calendar.data["hits"]] == ["Deploys are frozen in December."]
        tagged = await client.invoke(
            "memory/recall", "the river or the deploys", context_id="ops", options={"tags": ["n0"]}
        )
        assert [h["id"] for h in tagged.data["hits"]] == [ids[0]]
        one = await client.invoke("memory/recall", "river deploys backup", context_id="ops",
                                  options={"limit": 1})  # fmt: skip
        assert len(one.data["hits"]) == 1

        # Forget one entry, then the whole space.
        forgot = await client.invoke("memory/forget", ids[1], context_id="ops")  # id as text
        assert forgot.data == {"space": "ops", "id": ids[1], "forgotten": 1}
        after = await client.invoke("memory/recall", "when do we deploy?", context_id="ops")
        assert after.data["hits"] == []
        assert await _code(
            client.invoke("memory/forget", context_id="ops", options={"id": ids[1]})
        ) == (
            grpc.StatusCode.NOT_FOUND,
            f"agent 'memory': no entry {ids[1]!r} in memory space 'ops'",
        )
        gone = await client.invoke("memory/forget", context_id="ops", options={"all": True})
        assert gone.data["forgotten"] == 2
        assert await _code(
            client.invoke("memory/forget", context_id="ops", options={"all": True})
        ) == _missing("no memory space 'ops'")


async def test_bad_requests_name_what_is_wrong() -> None:
    async with running_mesh(MemoryAgent()) as mesh:
        client = mesh.client
        cases = [
            (client.invoke("memory/remember", "a fact"), "options.space"),
            (client.invoke("memory/remember", "x", options={"space": "s", "tags": "t"}), "tags"),
            (client.invoke("memory/recall", "q", options={"space": "s", "limit": 0}), "limit"),
            (client.invoke("memory/forget", options={"space": "s"}), "options.id"),
            (client.invoke("memory/forget", options={"space": "s", "id": "a", "all": True}), "all"),
            (client.invoke("memory/forget", options={"space": "s", "id": "../x"}), "options.id"),
            (client.invoke("memory/forget", "../x", options={"space": "s"}), "message.parts"),
            (client.invoke("memory/forget", "abc", options={"space": "s", "all": True}), "all"),
            (client.invoke("memory/remember", "x", options={"space": "s", "colour": 1}), "colour"),
        ]
        for call, field in cases:
            code, message = await _code(call)
            assert code == grpc.StatusCode.INVALID_ARGUMENT, message
            assert field in message


async def test_a_call_that_names_no_principal_is_refused() -> None:
    """Only a gateway says who the caller is: a call straight to the agent without it fails."""
    async with (
        running_agent(MemoryAgent()) as (_, address),
        grpc.aio.insecure_channel(address) as channel,
    ):
        stub = agent_pb2_grpc.AgentStub(channel)
        request = pb.InvokeRequest(skill="recall", message=pb.Message(parts=[pb.Part(text="q")]))
        request.options.update({"space": "s"})
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Invoke(request)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "names none" in (refused.value.details() or "")


def test_the_principal_header_round_trips_any_subject() -> None:
    for principal in ("key:tenant-a", "jwt:ünïcode subject/with%odd chars", "anonymous"):
        metadata = principal_metadata(principal)
        (key, value), = metadata  # fmt: skip
        assert key == PRINCIPAL_HEADER
        assert value.isascii()
        assert principal_from(metadata) == principal
    assert principal_from([("x-other", "v")]) == ""
    assert principal_from([(PRINCIPAL_HEADER, "%ff%fe")]) == ""
    assert principal_from([(PRINCIPAL_HEADER, "x" * 10_000)]) == ""


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_another_key_finds_nothing_and_cannot_forget(
    store: str, tmp_path: Path, redis_db: str
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        space_store: SpaceStore = (
            await stack.enter_async_context(redis_store(redis_db))
            if store == "redis"
            else MemorySpaceStore()
        )
        mesh = await stack.enter_async_context(
            running_mesh(
                MemoryAgent(space_store),
                WhoAmI(),
                auth_required=True,
                auth_keys_file=_keys(tmp_path),
            )
        )
        a = await stack.enter_async_context(AsyncClient(mesh.address, timeout=10, api_key=KEY_A))
        b = await stack.enter_async_context(AsyncClient(mesh.address, timeout=10, api_key=KEY_B))
        # B's client also claims to be A, in the header only the gateway may set.
        forger = await stack.enter_async_context(
            AsyncClient(
                mesh.address, timeout=10, api_key=KEY_B,
                metadata=[(PRINCIPAL_HEADER, "key:tenant-a")],
            )
        )  # fmt: skip

        assert (await a.invoke("whoami")).text == "key:tenant-a"
        assert (await forger.invoke("whoami")).text == "key:tenant-b"

        kept = await a.invoke("memory/remember", "The launch code is heron-42.",
                              options={"space": "secrets"})  # fmt: skip
        entry_id = kept.data["id"]
        for other in (b, forger):
            seen = await other.invoke("memory/recall", "launch code", options={"space": "secrets"})
            assert seen.data["hits"] == []
            assert seen.text == ""
            # Exactly what a space that never existed answers: nothing tells them apart.
            for space in ("secrets", "never-written"):
                assert await _code(
                    other.invoke("memory/forget", options={"space": space, "all": True})
                ) == _missing(f"no memory space {space!r}")
            assert await _code(
                other.invoke("memory/forget", options={"space": "secrets", "id": entry_id})
            ) == (
                grpc.StatusCode.NOT_FOUND,
                f"agent 'memory': no entry {entry_id!r} in memory space 'secrets'",
            )
        # B's own space of the same name is B's alone.
        await b.invoke("memory/remember", "B keeps its own notes.", options={"space": "secrets"})
        mine = await a.invoke("memory/recall", "launch code notes", options={"space": "secrets"})
        assert [h["text"] for h in mine.data["hits"]] == ["The launch code is heron-42."]
        assert (await a.invoke("memory/forget", options={"space": "secrets", "all": True})).data[
            "forgotten"
        ] == 1
        theirs = await b.invoke("memory/recall", "notes", options={"space": "secrets"})
        assert [h["text"] for h in theirs.data["hits"]] == ["B keeps its own notes."]


async def test_two_gateways_and_two_agents_on_one_redis_share_a_space(redis_db: str) -> None:
    async with (
        redis_store(redis_db) as first_store,
        redis_store(redis_db) as second_store,
        running_agent(MemoryAgent(first_store)) as (_, first_agent),
        running_agent(MemoryAgent(second_store)) as (_, second_agent),
        running_gateway({"memory": [first_agent]}) as (_, first_gateway),
        running_gateway({"memory": [second_agent]}) as (_, second_gateway),
        AsyncClient(first_gateway, timeout=10) as first,
        AsyncClient(second_gateway, timeout=10) as second,
    ):
        await first.invoke("memory/remember", "The VPN certificate expires in May.",
                           context_id="infra", options={"tags": ["vpn"]})  # fmt: skip
        found = await second.invoke("memory/recall", "vpn certificate", context_id="infra")
        assert found.text == "The VPN certificate expires in May."
        assert found.data["hits"][0]["tags"] == ["vpn"]
        dropped = await second.invoke("memory/forget", context_id="infra", options={"all": True})
        assert dropped.data["forgotten"] == 1
        assert (await first.invoke("memory/recall", "vpn", context_id="infra")).data["hits"] == []


async def test_a_workflow_remembers_then_recalls() -> None:
    workflow = {
        "name": "note-and-ask",
        "steps": [
            {
                "id": "keep",
                "agent": "memory",
                "skill": "remember",
                "input": "${input.text}",
                "options": {"space": "${state.space}", "tags": ["workflow"]},
            },
            {
                "id": "ask",
                "agent": "memory",
                "skill": "recall",
                "input": "${state.question}",
                "options": {"space": "${state.space}", "limit": 3},
            },
            {
                "id": "report",
                "compose": {
                    "text": "${steps.ask.output.text}",
                    "data": {"kept": "${steps.keep.output.data.id}",
                             "hits": "${steps.ask.output.data.hits}"},
                },
            },
        ],
    }  # fmt: skip
    async with running_mesh(MemoryAgent()) as mesh:
        await mesh.client.invoke("memory/remember", "Backups run at midnight.",
                                 options={"space": "team"})  # fmt: skip
        events = [
            e
            async for e in mesh.client.run_workflow(
                workflow,
                "The on-call phone is in the top drawer.",
                state={"space": "team", "question": "where is the on-call phone?"},
            )
        ]
        result = events[-1]
        assert isinstance(result, WorkflowFinished)
        assert result.text == "The on-call phone is in the top drawer."
        (hit,) = result.data["hits"]
        assert hit["id"] == result.data["kept"]
        assert hit["tags"] == ["workflow"]
        # The facts outlive the run: the next call (or run) recalls both.
        later = await mesh.client.invoke(
            "memory/recall", "backups phone", options={"space": "team"}
        )
        assert len(later.data["hits"]) == 2


async def test_a_job_works_for_the_key_that_submitted_it(tmp_path: Path) -> None:
    async with contextlib.AsyncExitStack() as stack:
        mesh = await stack.enter_async_context(
            running_mesh(
                MemoryAgent(), WhoAmI(), auth_required=True, auth_keys_file=_keys(tmp_path)
            )
        )
        a = await stack.enter_async_context(AsyncClient(mesh.address, timeout=10, api_key=KEY_A))
        b = await stack.enter_async_context(AsyncClient(mesh.address, timeout=10, api_key=KEY_B))
        who = await a.wait_job((await a.submit("whoami", "?")).job_id, timeout=10)
        assert who.state == "completed"
        assert isinstance(who.result, Reply)
        assert who.result.text == "key:tenant-a"
        kept = await a.submit("memory/remember", "Backups run at 02:00.", options={"space": "ops"})
        assert (await a.wait_job(kept.job_id, timeout=10)).state == "completed"
        mine = await a.invoke("memory/recall", "backups", options={"space": "ops"})
        assert [h["text"] for h in mine.data["hits"]] == ["Backups run at 02:00."]
        theirs = await b.invoke("memory/recall", "backups", options={"space": "ops"})
        assert theirs.data["hits"] == []
