"""Request bytes that are not the method's message get INVALID_ARGUMENT, on agents and the gateway.

Sent raw over a generic channel (no serializer), as a broken or hostile client would.
"""

from __future__ import annotations

import logging

import grpc
import pytest
from meshtest import ProbeAgent, running_agent, running_gateway

from agentmesh.v1 import messages_pb2 as pb


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _nested_options(depth: int) -> bytes:
    """InvokeRequest{options: Struct{"a": Value{struct_value: Struct{...}}}}, ``depth`` deep."""
    value = b""
    for _ in range(depth):
        struct = _field(1, _field(1, b"a") + _field(2, value))  # Struct.fields["a"] = value
        value = _field(5, struct)  # Value.struct_value
    return _field(4, struct)  # InvokeRequest.options


MALFORMED = {
    "corrupt bytes": b"\x1a\xff\xff\xff\xff\x0f",
    "nesting past the recursion limit": _nested_options(200),
    "invalid UTF-8 in a string field": _field(2, b"\xff\xfe"),  # InvokeRequest.skill
}


def test_the_samples_are_what_they_claim() -> None:
    good = pb.InvokeRequest.FromString(_nested_options(20))
    assert "a" in good.options.fields
    assert pb.InvokeRequest.FromString(_field(2, b"echo")).skill == "echo"
    for data in MALFORMED.values():
        with pytest.raises(Exception, match="Error parsing message"):
            pb.InvokeRequest.FromString(data)


async def _call_raw(address: str, method: str, data: bytes) -> grpc.aio.AioRpcError:
    async with grpc.aio.insecure_channel(address) as channel:
        call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            method, request_serializer=None, response_deserializer=None
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(data, timeout=10)
    return info.value


@pytest.mark.parametrize("sample", list(MALFORMED))
async def test_an_agent_and_the_gateway_refuse_bytes_that_do_not_parse(
    sample: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        running_agent(ProbeAgent()) as (_, agent_address),
        running_gateway({"probe": [agent_address]}) as (_, gateway_address),
    ):
        with caplog.at_level(logging.ERROR):
            refused = [
                await _call_raw(agent_address, "/agentmesh.v1.Agent/Invoke", MALFORMED[sample]),
                await _call_raw(gateway_address, "/agentmesh.v1.Gateway/Invoke", MALFORMED[sample]),
            ]
    for error in refused:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details() == (
            "the request is not a valid agentmesh.v1.InvokeRequest: it does not parse as "
            "protobuf (corrupt bytes, nesting deeper than protobuf's recursion limit, or a "
            "string field that is not valid UTF-8)"
        )
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_health_and_streaming_methods_refuse_them_too() -> None:
    async with running_agent(ProbeAgent()) as (_, address):
        check = await _call_raw(address, "/grpc.health.v1.Health/Check", b"\x0a\xff")
        assert check.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "grpc.health.v1.HealthCheckRequest" in (check.details() or "")
        async with grpc.aio.insecure_channel(address) as channel:
            stream: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(
                "/agentmesh.v1.Agent/InvokeStream",
                request_serializer=None,
                response_deserializer=None,
            )
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for _ in stream(MALFORMED["corrupt bytes"], timeout=10):
                    pass
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
