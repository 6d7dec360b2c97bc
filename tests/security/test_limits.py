"""Input limits enforced before work starts, and sanitized errors, through a real gateway."""

from __future__ import annotations

import grpc
import pytest
from meshtest import ProbeAgent, running_mesh

from agentmesh.v1 import gateway_pb2
from agentmesh.v1 import messages_pb2 as pb

KiB = 1024


def _request(text: str = "x", *, skill: str = "echo", parts: int = 1) -> pb.InvokeRequest:
    return pb.InvokeRequest(
        agent="probe",
        skill=skill,
        message=pb.Message(parts=[pb.Part(text=text) for _ in range(parts)]),
    )


async def _refusal(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call  # type: ignore[misc]
    return refused.value.code(), refused.value.details() or ""


async def test_message_just_under_the_byte_limit_passes_and_just_over_is_refused() -> None:
    limit = 64 * KiB
    async with running_mesh(ProbeAgent(), max_message_bytes=limit, max_text_chars=limit) as mesh:
        # Just under: room left only for the reply's envelope around the echoed text
        # (the reply travels under the same limit).
        size = limit - 256
        under = _request("a" * size)
        assert limit - 300 < under.ByteSize() < limit
        reply = await mesh.stub.Invoke(under, timeout=5)
        assert len(reply.artifacts[0].parts[0].text) == size

        over = _request("a" * (limit + 1))
        code, message = await _refusal(mesh.stub.Invoke(over, timeout=5))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert str(limit) in message  # names the configured maximum


async def test_parts_and_text_length_are_limited_with_the_limit_named() -> None:
    async with running_mesh(ProbeAgent(), max_parts=4, max_text_chars=100) as mesh:
        reply = await mesh.stub.Invoke(_request("y" * 100, parts=4), timeout=5)
        assert reply.agent == "probe"

        code, message = await _refusal(mesh.stub.Invoke(_request(parts=5), timeout=5))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert message == "message.parts: 5 parts given; the limit is 4 (max_parts)"

        code, message = await _refusal(mesh.stub.Invoke(_request("y" * 101), timeout=5))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert message == (
            "message.parts[0].text: 101 characters given; the limit is 100 (max_text_chars)"
        )

        # Inside a job too, before the job is created.
        job = gateway_pb2.SubmitJobRequest(invoke=_request("y" * 101))
        code, message = await _refusal(mesh.stub.SubmitJob(job, timeout=5))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert message.startswith("invoke.message.parts[0].text:")
        listing = await mesh.stub.ListJobs(gateway_pb2.ListJobsRequest(), timeout=5)
        assert not listing.jobs


async def test_call_and_stream_duration_are_limited() -> None:
    probe = ProbeAgent()
    async with running_mesh(probe, max_call_seconds=0.5) as mesh:
        code, message = await _refusal(mesh.stub.Invoke(_request(skill="hold"), timeout=10))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_call_seconds" in message

        stream = mesh.stub.InvokeStream(_request(skill="hold"), timeout=10)
        code, message = await _refusal(_drain(stream))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "max_call_seconds" in message


async def test_fan_out_width_is_limited_by_name() -> None:
    async with running_mesh(ProbeAgent(), max_fanout_legs=2) as mesh:
        targets = [gateway_pb2.Target(agent="probe", skill="echo") for _ in range(3)]
        request = gateway_pb2.FanOutRequest(
            targets=targets, message=pb.Message(parts=[pb.Part(text="x")])
        )
        code, message = await _refusal(mesh.stub.FanOut(request, timeout=5))
        assert code in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INVALID_ARGUMENT)
        assert "2" in message


SECRET = "abc123"


async def test_unexpected_errors_reach_the_caller_sanitized_unary_and_streaming() -> None:
    async with running_mesh(ProbeAgent()) as mesh:
        calls = [
            mesh.stub.Invoke(_request(skill="crash"), timeout=5),
            _drain(mesh.stub.InvokeStream(_request(skill="crash"), timeout=5)),
        ]
        for call in calls:
            code, message = await _refusal(call)
            assert code == grpc.StatusCode.INTERNAL
            assert "internal error (ref " in message
            for leak in (SECRET, "/etc/", "Traceback", "RuntimeError", ".py"):
                assert leak not in message


async def _drain(stream: object) -> None:
    async for _ in stream:  # type: ignore[attr-defined]
        pass


@pytest.mark.parametrize(
    ("parts", "text", "max_parts", "max_text_chars", "field"),
    [
        (2, "", 1, 10_000, "message.parts"),  # the smallest parts there are: 4 bytes each
        (1, "é" * 6, 100, 6, ""),  # 6 characters, 12 bytes: at the limit
        (1, "é" * 7, 100, 6, "message.parts[0].text"),
        (0, "", 0, 0, ""),
        (1, "", 0, 0, "message.parts"),
    ],
)
def test_the_shape_check_refuses_at_the_edges_of_its_size_shortcut(
    parts: int, text: str, max_parts: int, max_text_chars: int, field: str
) -> None:
    from agentmesh.runtime.limits import ShapeError, check_shape

    request = _request(text, parts=parts)
    if not field:
        check_shape(request, max_parts=max_parts, max_text_chars=max_text_chars)
        return
    with pytest.raises(ShapeError) as refused:
        check_shape(request, max_parts=max_parts, max_text_chars=max_text_chars)
    assert refused.value.field == field
