"""How A2A answers and failures become what the gateway expects of any agent."""

from __future__ import annotations

import grpc
import httpx
import pytest
from a2a.client.errors import A2AClientError, A2AClientTimeoutError
from a2a.types import a2a_pb2 as a2a
from a2a.utils import errors as a2a_errors

from agentmesh.gateway.external import as_rpc_error, mesh_card, send_request
from agentmesh.gateway.upstream import outcome_of, retry_after_of
from agentmesh.v1 import messages_pb2 as pb


def _http_failure(status: int, **headers: str) -> A2AClientError:
    request = httpx.Request("POST", "http://127.0.0.1:1/")
    response = httpx.Response(status, headers=headers, request=request)
    try:
        response.raise_for_status()
    except httpx.HTTPStatusError as cause:
        error = A2AClientError(f"HTTP Error {status}")
        error.__cause__ = cause
        return error
    raise AssertionError("not an error status")


def test_an_overloaded_http_agent_asks_for_a_retry_like_a_grpc_one() -> None:
    error = as_rpc_error(_http_failure(429, **{"Retry-After": "2"}), "currency")
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert retry_after_of(error) == 2.0
    assert outcome_of(error.code(), retry_after_of(error)).name == "FAILURE"


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (503, grpc.StatusCode.UNAVAILABLE),
        (500, grpc.StatusCode.INTERNAL),
        (401, grpc.StatusCode.UNAUTHENTICATED),
        (404, grpc.StatusCode.UNIMPLEMENTED),
        (418, grpc.StatusCode.INTERNAL),
    ],
)
def test_http_statuses_map_onto_grpc_codes(status: int, code: grpc.StatusCode) -> None:
    error = as_rpc_error(_http_failure(status), "currency")
    assert error.code() == code
    assert str(status) in (error.details() or "")


def test_network_timeouts_and_protocol_errors_map_by_kind() -> None:
    refused = A2AClientError("Network communication error")
    refused.__cause__ = httpx.ConnectError("connection refused")
    assert as_rpc_error(refused, "a").code() == grpc.StatusCode.UNAVAILABLE
    assert as_rpc_error(A2AClientTimeoutError("late"), "a").code() == (
        grpc.StatusCode.DEADLINE_EXCEEDED
    )
    missing = as_rpc_error(a2a_errors.TaskNotFoundError("no task t-1"), "a")
    assert (missing.code(), missing.details()) == (
        grpc.StatusCode.NOT_FOUND,
        "TaskNotFoundError: no task t-1",
    )
    assert as_rpc_error(a2a_errors.InvalidParamsError("bad"), "a").code() == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    # The gRPC binding's own status comes through untouched.
    original = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down"
    )
    wrapped = A2AClientError("gRPC Error UNAVAILABLE: down")
    wrapped.__cause__ = original
    assert as_rpc_error(wrapped, "a") is original


def test_a_request_becomes_one_new_a2a_message_with_skill_and_options() -> None:
    request = pb.InvokeRequest(
        agent="currency",
        skill="convert",
        message=pb.Message(task_id="gateway-task", parts=[pb.Part(text="10 EUR in USD")]),
    )
    request.options.update({"precision": 2})
    request.message.metadata.update({"tenant": "acme"})
    sent = send_request(request, blocking=False)
    message = sent.message
    assert message.task_id == ""  # a mesh call is a new task for the agent
    assert message.message_id
    assert message.role == a2a.ROLE_USER
    assert [p.text for p in message.parts] == ["10 EUR in USD"]
    assert dict(message.metadata) == {
        "tenant": "acme",
        "skill": "convert",
        "options": {"precision": 2.0},
    }
    assert sent.configuration.return_immediately


def test_an_a2a_card_in_agentmeshs_shape() -> None:
    card = a2a.AgentCard(
        name="currency",
        version="3.0",
        description="converts money",
        capabilities=a2a.AgentCapabilities(
            streaming=True, extensions=[a2a.AgentExtension(uri="urn:x")]
        ),
        skills=[a2a.AgentSkill(id="convert", name="Convert", tags=["money"], examples=["1 EUR"])],
        default_input_modes=["text/plain"],
    )
    mesh = mesh_card(card)
    assert (mesh.name, mesh.version, mesh.description) == ("currency", "3.0", "converts money")
    assert [(s.id, s.name, list(s.tags), list(s.examples)) for s in mesh.skills] == [
        ("convert", "Convert", ["money"], ["1 EUR"])
    ]
    assert mesh.capabilities.streaming
    assert list(mesh.capabilities.extensions) == ["urn:x"]
    assert list(mesh.default_input_modes) == ["text/plain"]
