"""Delegation: a handler calls the mesh through ``request.mesh``; the call goes through the
gateway with the remaining deadline and a hop count, and a loop ends at the depth limit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from meshtest import free_port
from security.tlscerts import CertificateAuthority

from agentmesh.client import AsyncClient, CallError
from agentmesh.gateway.auth import hash_key, new_key
from agentmesh.runtime import Agent, AgentCard, AgentSettings, Request, Result, Skill
from agentmesh.runtime.delegation import GatewayConnection
from agentmesh.runtime.tls import TLSConfigError
from agentmesh.testing import RecordingAgent, running_agent, running_gateway, running_mesh
from agentmesh.v1 import gateway_pb2
from agentmesh.v1 import messages_pb2 as pb


class Relay(Agent):
    """Passes its text on to ``target`` through the mesh and reports what came back."""

    def __init__(self, name: str, target: str) -> None:
        self.card = AgentCard(name=name, description="delegates", skills=(Skill(id="relay"),))
        self.target = target
        self.seen_hops: list[int] = []

    async def invoke(self, request: Request) -> Result:
        self.seen_hops.append(request.hops)
        answer = await request.mesh.invoke(
            self.target, request.text, options={"via": self.card.name}
        )
        return Result.of(text=f"{self.card.name}> {answer.text}", data={"hops": request.hops})


class StreamRelay(Relay):
    async def invoke(self, request: Request) -> Result:
        texts = []
        async for item in request.mesh.stream(self.target, request.text):
            if isinstance(item, Result):
                texts.append(item.text)
        return Result.of(text=" ".join(texts))


async def test_a_handler_calls_another_agent_through_the_gateway() -> None:
    recorder = RecordingAgent("notes", skills=["store"])
    relay = Relay("relay", "notes/store")
    async with running_mesh(relay, recorder, delegation=True) as mesh:
        reply = await mesh.client.invoke("relay", "hello", timeout=5)
        assert reply.text == "relay> hello"
        call = recorder.assert_called(
            times=1, skill="store", text="hello", options={"via": "relay"}
        )
        assert call.hops == 1  # one delegation led to it
        assert relay.seen_hops == [0]
        remaining = call.time_remaining()
        assert remaining is not None  # the relay's deadline travelled with the call:
        assert remaining < 15  # the caller's 5 s, not the gateway's default 30 s
        # The gateway routed it like any call: it counts in the callee's picks.
        listing = await mesh.stub.ListAgents(gateway_pb2.ListAgentsRequest())
        assert {a.name for a in listing.agents} == {"relay", "notes"}


async def test_stream_through_the_mesh() -> None:
    recorder = RecordingAgent("notes", skills=["store"])
    async with running_mesh(StreamRelay("relay", "notes"), recorder, delegation=True) as mesh:
        reply = await mesh.client.invoke("relay", "streamed", timeout=20)
    assert reply.text == "streamed"
    recorder.assert_called(times=1, text="streamed")


async def test_a_delegation_loop_is_refused_at_the_depth_limit() -> None:
    ping, pong = Relay("ping", "pong"), Relay("pong", "ping")
    async with running_mesh(ping, pong, delegation=True, max_delegation_depth=3) as mesh:
        with pytest.raises(CallError) as refused:
            await mesh.client.invoke("ping", "ball", timeout=20)
    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "delegation depth 4 is over the gateway's limit of 3" in refused.value.message
    # ping (0), pong (1), ping (2), pong (3); the call at depth 4 never reached an agent.
    assert ping.seen_hops == [0, 2]
    assert pong.seen_hops == [1, 3]


async def test_an_agent_without_a_gateway_says_how_to_give_it_one() -> None:
    relay = Relay("relay", "notes")
    async with running_mesh(relay) as mesh:  # no delegation: the agents know no gateway
        with pytest.raises(CallError) as refused:
            await mesh.client.invoke("relay", "hi", timeout=20)
    assert refused.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "AGENTMESH_GATEWAY" in refused.value.message


async def test_a_forged_hop_count_past_the_limit_is_refused_before_any_call() -> None:
    recorder = RecordingAgent("notes")
    async with running_mesh(recorder, max_delegation_depth=2) as mesh:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await mesh.stub.Invoke(
                pb.InvokeRequest(agent="notes", message=pb.Message(parts=[pb.Part(text="x")])),
                metadata=(("x-agentmesh-hops", "3"),),
                timeout=10,
            )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "delegation depth 3" in (refused.value.details() or "")
    assert recorder.calls == []


# -- credentials and TLS ----------------------------------------------------------------

CALLER_KEY = new_key()
RELAY_KEY = new_key()


def _keys(tmp_path: Path) -> Path:
    """The client may call the relay only; the relay's own key may call notes only."""
    path = tmp_path / "keys.yaml"
    entries = [
        {"id": "caller", "hash": hash_key(CALLER_KEY), "scopes": {"agents": ["relay"]}},
        {"id": "relay-agent", "hash": hash_key(RELAY_KEY), "scopes": {"agents": ["notes"]}},
    ]
    for entry in entries:
        entry["scopes"] = {**entry["scopes"], "skills": ["*"]}  # type: ignore[dict-item]
    path.write_text(yaml.safe_dump({"keys": entries}))
    return path


async def test_a_gateway_with_auth_on_refuses_a_delegation_without_the_agents_key(
    tmp_path: Path,
) -> None:
    notes = RecordingAgent("notes", skills=["store"])
    auth: dict[str, Any] = {"auth_required": True, "auth_keys_file": _keys(tmp_path)}
    async with running_mesh(
        Relay("relay", "notes/store"), notes, delegation=True, api_key=CALLER_KEY, **auth
    ) as mesh:
        with pytest.raises(CallError) as refused:
            await mesh.client.invoke("relay", "hello", timeout=10)
    assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert refused.value.message.startswith("agent 'relay': notes/store: authentication required")
    assert "this agent presents no API key to the gateway" in refused.value.message
    assert "AGENTMESH_MESH_API_KEY" in refused.value.message
    assert notes.calls == []


async def test_the_agents_key_admits_its_delegation_and_its_scopes_apply(
    tmp_path: Path,
) -> None:
    notes = RecordingAgent("notes", skills=["store"])
    secret = RecordingAgent("secret")
    auth: dict[str, Any] = {"auth_required": True, "auth_keys_file": _keys(tmp_path)}
    async with running_mesh(
        Relay("relay", "notes/store"),
        Relay("snoop", "secret"),
        notes,
        secret,
        delegation=True,
        agent_settings={"mesh_api_key": RELAY_KEY},
        api_key=CALLER_KEY,
        **auth,
    ) as mesh:
        reply = await mesh.client.invoke("relay", "hello", timeout=10)
        assert reply.text == "relay> hello"
        assert notes.assert_called(times=1, text="hello").hops == 1
        # The client may not call notes itself: the relay's key made that call.
        with pytest.raises(CallError) as direct:
            await mesh.client.invoke("notes/store", "hello", timeout=10)
        assert direct.value.code == grpc.StatusCode.PERMISSION_DENIED
        # The relay's key may call notes only: snoop's call to secret is refused.
        async with AsyncClient(mesh.address, api_key=RELAY_KEY) as as_agent:
            with pytest.raises(CallError) as denied:
                await as_agent.invoke("snoop", "peek", timeout=10)
    assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert "relay-agent may not call agent 'snoop'" in denied.value.message
    snooped = await _refusal_inside(tmp_path, auth)
    assert snooped.code == grpc.StatusCode.PERMISSION_DENIED
    assert snooped.message.startswith("agent 'snoop': secret: ")
    assert "relay-agent may not call agent 'secret'" in snooped.message
    assert secret.calls == []


async def _refusal_inside(tmp_path: Path, auth: dict[str, Any]) -> CallError:
    """What the client sees when snoop (admitted for the client) delegates past its scopes."""
    keys = tmp_path / "wide.yaml"
    keys.write_text(
        yaml.safe_dump(
            {
                "keys": [
                    {"id": "caller", "hash": hash_key(CALLER_KEY),
                     "scopes": {"agents": ["snoop"], "skills": ["*"]}},
                    {"id": "relay-agent", "hash": hash_key(RELAY_KEY),
                     "scopes": {"agents": ["notes"], "skills": ["*"]}},
                ]
            }
        )
    )  # fmt: skip
    secret = RecordingAgent("secret")
    async with running_mesh(
        Relay("snoop", "secret"),
        secret,
        delegation=True,
        agent_settings={"mesh_api_key": RELAY_KEY},
        api_key=CALLER_KEY,
        **{**auth, "auth_keys_file": keys},
    ) as mesh:
        with pytest.raises(CallError) as refused:
            await mesh.client.invoke("snoop", "peek", timeout=10)
    assert secret.calls == []
    return refused.value


async def test_delegation_reaches_a_tls_gateway_with_the_ca_it_is_given(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path)
    gateway_pem = ca.issue("gateway", server=True)
    key_file = tmp_path / "relay.key"
    key_file.write_text(RELAY_KEY + "\n")
    port = free_port()
    notes = RecordingAgent("notes", skills=["store"])
    agent_settings = {
        "gateway": f"https://127.0.0.1:{port}",
        "mesh_tls_ca_file": ca.ca_file,
        "mesh_api_key_file": key_file,
    }
    async with (
        running_agent(Relay("relay", "notes/store"), **agent_settings) as (_, relay_address),
        running_agent(notes) as (_, notes_address),
        running_gateway(
            {"relay": [relay_address], "notes": [notes_address]},
            port=port,
            tls_cert_file=gateway_pem.cert,
            tls_key_file=gateway_pem.key,
            auth_required=True,
            auth_keys_file=_keys(tmp_path),
        ),
        AsyncClient(f"127.0.0.1:{port}", tls_ca_file=ca.ca_file, api_key=CALLER_KEY) as client,
    ):
        reply = await client.invoke("relay", "over TLS", timeout=10)
    assert reply.text == "relay> over TLS"
    notes.assert_called(times=1, text="over TLS")


def test_an_unreadable_mesh_key_file_names_the_setting(tmp_path: Path) -> None:
    settings = AgentSettings(gateway="127.0.0.1:1", mesh_api_key_file=tmp_path / "missing")
    with pytest.raises(TLSConfigError) as caught:
        GatewayConnection.from_settings(settings)
    assert str(caught.value).startswith("mesh_api_key_file: cannot read")
