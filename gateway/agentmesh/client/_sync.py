"""The blocking client of the agentmesh gateway (for scripts and notebooks)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

import grpc

from agentmesh.client._model import (
    DEFAULT_GATEWAY,
    AgentInfo,
    CallError,
    Event,
    Reply,
    WorkflowEvent,
    agents_from_proto,
    build_request,
    build_workflow_request,
    event_from_proto,
    reply_from_proto,
    workflow_event_from_proto,
)
from agentmesh.runtime.types import JSONValue, Part
from agentmesh.telemetry.client import client_span
from agentmesh.v1 import gateway_pb2, gateway_pb2_grpc

_LIST_AGENTS = "agentmesh.v1.Gateway/ListAgents"
_INVOKE = "agentmesh.v1.Gateway/Invoke"
_INVOKE_STREAM = "agentmesh.v1.Gateway/InvokeStream"
_RUN_WORKFLOW = "agentmesh.v1.Gateway/RunWorkflow"


class Client:
    """Blocking twin of :class:`~agentmesh.client.AsyncClient`, same methods::

    with Client() as client:
        print(client.invoke("calculator", "2*(3+4)**2").text)
    """

    def __init__(
        self,
        target: str = DEFAULT_GATEWAY,
        *,
        timeout: float | None = 30.0,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> None:
        self._channel = grpc.insecure_channel(target)
        self._stub = gateway_pb2_grpc.GatewayStub(self._channel)
        self._timeout = timeout
        self._metadata = tuple(metadata)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def list_agents(self, *, refresh: bool = False) -> list[AgentInfo]:
        with client_span(_LIST_AGENTS, self._metadata) as call_metadata:
            try:
                response = self._stub.ListAgents(
                    gateway_pb2.ListAgentsRequest(refresh=refresh),
                    timeout=self._timeout,
                    metadata=call_metadata,
                )
            except grpc.RpcError as exc:
                raise CallError.from_rpc(exc) from None
        return agents_from_proto(response)

    def invoke(
        self,
        target: str | None = None,
        text: str | None = None,
        *,
        agent: str | None = None,
        skill: str | None = None,
        data: JSONValue | None = None,
        parts: Sequence[Part] = (),
        options: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Reply:
        request = build_request(
            target,
            text,
            agent=agent,
            skill=skill,
            data=data,
            parts=parts,
            options=options,
            metadata=metadata,
        )
        with client_span(_INVOKE, self._metadata) as call_metadata:
            try:
                response = self._stub.Invoke(
                    request, timeout=timeout or self._timeout, metadata=call_metadata
                )
            except grpc.RpcError as exc:
                raise CallError.from_rpc(exc) from None
        return reply_from_proto(response)

    def stream(
        self,
        target: str | None = None,
        text: str | None = None,
        *,
        agent: str | None = None,
        skill: str | None = None,
        data: JSONValue | None = None,
        parts: Sequence[Part] = (),
        options: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Iterator[Event]:
        request = build_request(
            target,
            text,
            agent=agent,
            skill=skill,
            data=data,
            parts=parts,
            options=options,
            metadata=metadata,
        )
        with client_span(_INVOKE_STREAM, self._metadata) as call_metadata:
            call = self._stub.InvokeStream(
                request, timeout=timeout or self._timeout, metadata=call_metadata
            )
            try:
                for event in call:
                    yield event_from_proto(event)
            except grpc.RpcError as exc:
                raise CallError.from_rpc(exc) from None
            finally:
                call.cancel()

    def run_workflow(
        self,
        workflow: str | Mapping[str, Any],
        text: str | None = None,
        *,
        data: JSONValue | None = None,
        parts: Sequence[Part] = (),
        state: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Iterator[WorkflowEvent]:
        """Run a workflow, yielding its progress (see ``AsyncClient.run_workflow``)."""
        request = build_workflow_request(workflow, text, data=data, parts=parts, state=state)
        with client_span(_RUN_WORKFLOW, self._metadata) as call_metadata:
            call = self._stub.RunWorkflow(
                request, timeout=timeout or self._timeout, metadata=call_metadata
            )
            try:
                for event in call:
                    yield workflow_event_from_proto(event)
            except grpc.RpcError as exc:
                raise CallError.from_rpc(exc) from None
            finally:
                call.cancel()
