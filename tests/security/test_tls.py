"""TLS on every server, mTLS between the gateway and agents, and the plaintext health port."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from meshtest import ProbeAgent, running_agent, running_gateway
from security.tlscerts import CertificateAuthority

from agentmesh.runtime.server import ServerStartError
from agentmesh.runtime.tls import channel_credentials
from agentmesh.v1 import agent_pb2, agent_pb2_grpc
from agentmesh.v1 import messages_pb2 as pb


def _request(text: str = "hi") -> pb.InvokeRequest:
    return pb.InvokeRequest(skill="echo", message=pb.Message(parts=[pb.Part(text=text)]))


async def test_agent_serves_tls_and_a_plaintext_health_port(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path)
    server_pem = ca.issue("agent", server=True)
    async with running_agent(
        ProbeAgent(), tls_cert_file=server_pem.cert, tls_key_file=server_pem.key, health_port=0
    ) as (server, address):
        credentials = channel_credentials(ca_file=ca.ca_file)
        assert credentials is not None
        async with grpc.aio.secure_channel(address, credentials) as channel:
            reply = await agent_pb2_grpc.AgentStub(channel).Invoke(_request("over tls"), timeout=5)
        assert reply.artifacts[0].parts[0].text == "over tls"

        # A plaintext client cannot talk to the TLS port...
        async with grpc.aio.insecure_channel(address) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await agent_pb2_grpc.AgentStub(channel).GetCard(
                    agent_pb2.GetCardRequest(), timeout=2
                )
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

        # ...but probes get health, and only health, in plaintext on the health port.
        assert server.health_port
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.health_port}") as channel:
            status = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=2
            )
            assert status.status == health_pb2.HealthCheckResponse.SERVING
            with pytest.raises(grpc.aio.AioRpcError) as not_there:
                await agent_pb2_grpc.AgentStub(channel).Invoke(_request(), timeout=2)
        assert not_there.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_mtls_agent_refuses_a_client_without_a_valid_certificate(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path)
    rogue_ca = CertificateAuthority(tmp_path, "rogue CA")
    server_pem = ca.issue("agent", server=True)
    async with running_agent(
        ProbeAgent(),
        tls_cert_file=server_pem.cert,
        tls_key_file=server_pem.key,
        tls_client_ca_file=ca.ca_file,
    ) as (_, address):
        good = ca.issue("gateway", server=False)
        rogue = rogue_ca.issue("intruder", server=False)
        for client_pem in (None, rogue):
            credentials = channel_credentials(
                ca_file=ca.ca_file,
                cert_file=client_pem.cert if client_pem else None,
                key_file=client_pem.key if client_pem else None,
            )
            assert credentials is not None
            async with grpc.aio.secure_channel(address, credentials) as channel:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await agent_pb2_grpc.AgentStub(channel).Invoke(_request(), timeout=3)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

        credentials = channel_credentials(
            ca_file=ca.ca_file, cert_file=good.cert, key_file=good.key
        )
        assert credentials is not None
        async with grpc.aio.secure_channel(address, credentials) as channel:
            reply = await agent_pb2_grpc.AgentStub(channel).Invoke(_request("signed"), timeout=5)
        assert reply.artifacts[0].parts[0].text == "signed"


async def test_gateway_serves_tls_and_calls_agents_over_mtls(tmp_path: Path) -> None:
    agents_ca = CertificateAuthority(tmp_path, "agents CA")
    clients_ca = CertificateAuthority(tmp_path, "clients CA")
    public_ca = CertificateAuthority(tmp_path, "public CA")
    agent_pem = agents_ca.issue("agent", server=True)
    gateway_client = clients_ca.issue("gateway-client", server=False)
    gateway_server = public_ca.issue("gateway", server=True)
    async with (
        running_agent(
            ProbeAgent(),
            tls_cert_file=agent_pem.cert,
            tls_key_file=agent_pem.key,
            tls_client_ca_file=clients_ca.ca_file,
        ) as (_, agent_address),
        running_gateway(
            {"probe": [agent_address]},
            tls_cert_file=gateway_server.cert,
            tls_key_file=gateway_server.key,
            upstream_tls_ca_file=agents_ca.ca_file,
            upstream_tls_cert_file=gateway_client.cert,
            upstream_tls_key_file=gateway_client.key,
        ) as (_, gateway_address),
    ):
        from agentmesh.client import AsyncClient

        async with AsyncClient(gateway_address, tls_ca_file=public_ca.ca_file) as client:
            reply = await client.invoke("probe/echo", "through mtls")
        assert reply.text == "through mtls"


async def test_unreadable_certificate_stops_the_server_with_the_setting_named(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "nope.crt"
    with pytest.raises(ServerStartError, match=r"tls_(cert|key)_file: cannot read"):
        async with running_agent(ProbeAgent(), tls_cert_file=missing, tls_key_file=missing):
            pass
