"""The asyncio client of the agentmesh gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
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


class AsyncClient:
    """Calls the gateway at ``target`` (``host:port``) over one reused channel.

    ``timeout`` is the default deadline of every call in seconds (None: none).
    Failed calls raise :class:`CallError` with the gRPC status and message::

        async with AsyncClient() as client:
            reply = await client.invoke("summarizer", "Long text ...", options={"sentences": 2})
            print(reply.text)
    """

    def __init__(
        self,
        target: str = DEFAULT_GATEWAY,
        *,
        timeout: float | None = 30.0,
        metadata: Sequence[tuple[str, str]] = (),
        channel: grpc.aio.Channel | None = None,
    ) -> None:
        self._channel = channel or grpc.aio.insecure_channel(target)
        self._owns_channel = channel is None
        self._stub: gateway_pb2_grpc.GatewayAsyncStub = gateway_pb2_grpc.GatewayStub(self._channel)
        self._timeout = timeout
        self._metadata = tuple(metadata)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_channel:
            await self._channel.close()

    async def list_agents(self, *, refresh: bool = False) -> list[AgentInfo]:
        with client_span(_LIST_AGENTS, self._metadata) as call_metadata:
            try:
                response = await self._stub.ListAgents(
                    gateway_pb2.ListAgentsRequest(refresh=refresh),
                    timeout=self._timeout,
                    metadata=call_metadata,
                )
            except grpc.aio.AioRpcError as exc:
                raise CallError.from_rpc(exc) from None
        return agents_from_proto(response)

    async def invoke(
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
        """Run one request to completion.

        ``target`` is ``"NAME"``, ``"NAME/SKILL"`` or ``"skill:SKILL"``; the
        ``agent``/``skill`` keywords say the same explicitly.
        """
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
                response = await self._stub.Invoke(
                    request, timeout=timeout or self._timeout, metadata=call_metadata
                )
            except grpc.aio.AioRpcError as exc:
                raise CallError.from_rpc(exc) from None
        return reply_from_proto(response)

    async def stream(
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
    ) -> AsyncIterator[Event]:
        """Run one request, yielding Started, Partial, StreamError and Final events."""
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
                async for event in call:
                    yield event_from_proto(event)
            except grpc.aio.AioRpcError as exc:
                raise CallError.from_rpc(exc) from None
            finally:
                call.cancel()

    async def run_workflow(
        self,
        workflow: str | Mapping[str, Any],
        text: str | None = None,
        *,
        data: JSONValue | None = None,
        parts: Sequence[Part] = (),
        state: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[WorkflowEvent]:
        """Run a workflow, yielding its progress; the last event is WorkflowFinished.

        ``workflow`` is a declared workflow's name or a definition (the YAML
        structure as a mapping); ``text``/``data``/``parts`` are its input and
        ``state`` the shared state its conditions read. A failed run raises
        CallError after the events that explain it.
        """
        request = build_workflow_request(workflow, text, data=data, parts=parts, state=state)
        with client_span(_RUN_WORKFLOW, self._metadata) as call_metadata:
            call = self._stub.RunWorkflow(
                request, timeout=timeout or self._timeout, metadata=call_metadata
            )
            try:
                async for event in call:
                    yield workflow_event_from_proto(event)
            except grpc.aio.AioRpcError as exc:
                raise CallError.from_rpc(exc) from None
            finally:
                call.cancel()
