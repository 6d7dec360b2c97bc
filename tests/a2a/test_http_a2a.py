"""A2A over the gateway's HTTP port: a2a-sdk's client, discovering from the base URL alone."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from a2a.client import A2AClientError, Client, ClientConfig, create_client
from a2a.types import a2a_pb2 as a2a
from a2a.utils.constants import TransportProtocol
from a2a.utils.errors import A2AError
from a2atest import a2a_mesh, message, state_of, texts
from meshtest import ProbeAgent, wait_until

from agentmesh.agents.calculator.agent import CalculatorAgent
from agentmesh.gateway.auth import hash_key

REFUSED = (A2AClientError, A2AError)  # an HTTP error status, or the A2A error the body names
BINDINGS = [TransportProtocol.JSONRPC, TransportProtocol.HTTP_JSON]
WORKFLOWS = {
    "double": {
        "description": "echo twice",
        "steps": [
            {"id": "one", "agent": "probe", "skill": "echo"},
            {"id": "two", "agent": "probe", "skill": "echo", "input": "{{ steps.one.output }}"},
        ],
    }
}


@contextlib.asynccontextmanager
async def http_client(
    url: str, binding: str, *, streaming: bool = True, headers: dict[str, str] | None = None
) -> AsyncIterator[Client]:
    """a2a-sdk's client for the agent at ``url``, found by its card, speaking ``binding``."""
    async with httpx.AsyncClient(headers=headers or {}, timeout=30) as http:
        config = ClientConfig(
            streaming=streaming, httpx_client=http, supported_protocol_bindings=[binding]
        )
        client = await create_client(url, client_config=config)
        try:
            yield client
        finally:
            await client.close()


async def http_get(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.get(url)


@pytest.mark.parametrize("where", ["", "agents/calculator/"])
@pytest.mark.parametrize("binding", BINDINGS)
async def test_a_client_finds_the_mesh_by_its_url_and_sends_streams_gets_lists(
    binding: str, where: str
) -> None:
    """At the mesh's base URL, and at one agent's own."""
    async with a2a_mesh(CalculatorAgent(), http_port=0) as mesh:
        base = mesh.gateway.http_url()
        assert base is not None
        url = base + where
        card = (await http_get(f"{url}.well-known/agent-card.json")).json()
        bindings = {i["protocolBinding"]: i["url"] for i in card["supportedInterfaces"]}
        assert set(bindings) == (
            {"JSONRPC", "HTTP+JSON"} if where else {"GRPC", "JSONRPC", "HTTP+JSON"}
        )
        assert bindings["JSONRPC"] == url
        async with http_client(url, binding, streaming=False) as client:
            [sent] = [
                e async for e in client.send_message(message("2*7**2", skill="calculator/evaluate"))
            ]
            got = await client.get_task(a2a.GetTaskRequest(id=sent.task.id))
            listed = await client.list_tasks(a2a.ListTasksRequest())
        async with http_client(url, binding) as client:
            events = [
                e async for e in client.send_message(message("1+1", skill="calculator/evaluate"))
            ]
    assert sent.task.status.state == a2a.TASK_STATE_COMPLETED
    assert texts(sent.task.artifacts[0]) == "98"
    assert got.status.state == a2a.TASK_STATE_COMPLETED
    assert texts(got.artifacts[0]) == "98"
    assert sent.task.id in {t.id for t in listed.tasks}
    states = [state_of(e) for e in events if state_of(e) is not None]
    assert states[0] == a2a.TASK_STATE_SUBMITTED
    assert states[-1] == a2a.TASK_STATE_COMPLETED
    artifacts = [e.artifact_update.artifact for e in events if e.HasField("artifact_update")]
    assert "2" in [texts(a) for a in artifacts]


@pytest.mark.parametrize("where", ["", "agents/probe/"])
@pytest.mark.parametrize("binding", BINDINGS)
async def test_a_running_task_is_subscribed_to_and_cancelled(binding: str, where: str) -> None:
    probe = ProbeAgent()
    async with a2a_mesh(probe, http_port=0) as mesh:
        base = mesh.gateway.http_url()
        assert base is not None
        url = base + where
        async with http_client(url, binding, streaming=False) as client:
            held = message("x", skill="probe/hold")
            held.configuration.return_immediately = True
            [first] = [e async for e in client.send_message(held)]
            await wait_until(probe.entered.is_set)
        async with http_client(url, binding) as client:
            subscription = client.subscribe(a2a.SubscribeToTaskRequest(id=first.task.id))
            seen = await anext(aiter(subscription))
            cancelled = await client.cancel_task(a2a.CancelTaskRequest(id=first.task.id))
            rest = [e async for e in subscription]
    assert state_of(seen) in (a2a.TASK_STATE_SUBMITTED, a2a.TASK_STATE_WORKING)
    assert cancelled.status.state == a2a.TASK_STATE_CANCELED
    assert state_of(rest[-1]) == a2a.TASK_STATE_CANCELED
    await wait_until(probe.cancelled.is_set)


@pytest.mark.parametrize("binding", BINDINGS)
async def test_each_agent_and_workflow_is_an_a2a_agent_of_its_own(binding: str) -> None:
    async with a2a_mesh(ProbeAgent(), CalculatorAgent(), workflows=WORKFLOWS, http_port=0) as mesh:
        url = mesh.gateway.http_url()
        assert url is not None
        card = (await http_get(f"{url}agents/calculator/.well-known/agent-card.json")).json()
        missing = await http_get(f"{url}agents/nobody/.well-known/agent-card.json")
        async with http_client(f"{url}agents/calculator", binding, streaming=False) as client:
            [plain] = [e async for e in client.send_message(message("6*7"))]
            [named] = [e async for e in client.send_message(message("6*8", skill="evaluate"))]
            with pytest.raises(REFUSED, match="not a skill of agent 'calculator'"):
                [e async for e in client.send_message(message("x", skill="probe/echo"))]
        async with http_client(f"{url}agents/double", binding) as client:
            events = [e async for e in client.send_message(message("hey"))]
    assert card["name"] == "calculator"
    assert [s["id"] for s in card["skills"]] == [
        "calculator",
        "calculator/evaluate",
        "calculator/solve",
    ]
    assert missing.status_code == 404
    assert "neither an agent" in missing.json()["error"]["message"]
    assert texts(plain.task.artifacts[0]) == "42"
    assert texts(named.task.artifacts[0]) == "48"
    assert state_of(events[-1]) == a2a.TASK_STATE_COMPLETED


@pytest.mark.parametrize("binding", BINDINGS)
async def test_keys_and_scopes_hold_on_the_http_port(binding: str, tmp_path: Path) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text(
        f"keys:\n  - id: echoer\n    hash: {hash_key('k-echo')}\n"
        "    scopes: {agents: [probe], skills: [echo], workflows: []}\n"
    )
    async with a2a_mesh(ProbeAgent(), auth_required=True, auth_keys_file=keys, http_port=0) as mesh:
        url = mesh.gateway.http_url()
        assert url is not None
        public = (await http_get(f"{url}.well-known/agent-card.json")).json()
        async with http_client(url, binding, streaming=False, headers={"x-api-key": "k-echo"}) as c:
            [reply] = [e async for e in c.send_message(message("hi", skill="probe/echo"))]
            with pytest.raises(REFUSED, match=r"403|PERMISSION_DENIED"):
                [e async for e in c.send_message(message("hi", skill="probe/spell"))]
        bearer = {"authorization": "Bearer k-echo"}
        async with http_client(url, binding, streaming=False, headers=bearer) as c:
            got = await c.get_task(a2a.GetTaskRequest(id=reply.task.id))
        async with http_client(url, binding, streaming=False) as anonymous:
            with pytest.raises(REFUSED, match=r"401|UNAUTHENTICATED"):
                await anonymous.get_task(a2a.GetTaskRequest(id=reply.task.id))
        async with httpx.AsyncClient(timeout=30) as http:
            refused = await http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "GetTask"})
    assert reply.task.status.state == a2a.TASK_STATE_COMPLETED
    assert got.status.state == a2a.TASK_STATE_COMPLETED
    assert not public.get("skills")  # those are for the extended card
    assert set(public["securitySchemes"]) == {"apiKey", "bearer"}
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")
