"""The asyncio client of the agentmesh gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
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
from agentmesh.client._orchestration import (
    Aggregation,
    FanOutResult,
    Job,
    JobEvent,
    Policy,
    build_answer,
    build_fan_out,
    build_job,
    fan_out_from_proto,
    job_event_from_proto,
    job_from_proto,
    job_state_filter,
)
from agentmesh.client._security import Security, with_credentials
from agentmesh.client._sessions import Session, session_from_proto
from agentmesh.runtime.types import JSONValue, Part
from agentmesh.telemetry.client import client_span
from agentmesh.v1 import gateway_pb2, gateway_pb2_grpc

_LIST_AGENTS = "agentmesh.v1.Gateway/ListAgents"
_INVOKE = "agentmesh.v1.Gateway/Invoke"
_INVOKE_STREAM = "agentmesh.v1.Gateway/InvokeStream"
_RUN_WORKFLOW = "agentmesh.v1.Gateway/RunWorkflow"
_FAN_OUT = "agentmesh.v1.Gateway/FanOut"
_WATCH_JOB = "agentmesh.v1.Gateway/WatchJob"


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
        security: Security | None = None,
        api_key: str | None = None,
        token: str | None = None,
        tls_ca_file: Path | str | None = None,
    ) -> None:
        security = with_credentials(security, api_key, token, tls_ca_file)
        if channel is None:
            credentials = security.channel_credentials()
            channel = (
                grpc.aio.insecure_channel(target)
                if credentials is None
                else grpc.aio.secure_channel(target, credentials)
            )
            self._owns_channel = True
        else:
            self._owns_channel = False
        self._channel = channel
        self._stub: gateway_pb2_grpc.GatewayAsyncStub = gateway_pb2_grpc.GatewayStub(self._channel)
        self._timeout = timeout
        self._metadata = (*security.metadata(), *metadata)

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
        context_id: str | None = None,
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
            context_id=context_id,
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
        context_id: str | None = None,
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
            context_id=context_id,
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

    async def fan_out(
        self,
        targets: Sequence[str] = (),
        text: str | None = None,
        *,
        skill: str | None = None,
        data: JSONValue | None = None,
        options: Mapping[str, Any] | None = None,
        policy: Policy = "all",
        quorum: int = 0,
        aggregation: Aggregation = "collect",
        field: str = "",
        aggregator: str | None = None,
        max_width: int = 0,
        leg_timeout: float | None = None,
        timeout: float | None = None,
    ) -> FanOutResult:
        """Send one request to every target (``NAME`` or ``NAME/SKILL``), or to every
        agent offering ``skill`` when no targets are given, and aggregate the answers."""
        request = build_fan_out(
            targets, text, skill=skill, data=data, options=options, policy=policy,
            quorum=quorum, aggregation=aggregation, field=field, aggregator=aggregator,
            max_width=max_width, leg_timeout=leg_timeout,
        )  # fmt: skip
        with client_span(_FAN_OUT, self._metadata) as call_metadata:
            try:
                response = await self._stub.FanOut(
                    request, timeout=timeout or self._timeout, metadata=call_metadata
                )
            except grpc.aio.AioRpcError as exc:
                raise CallError.from_rpc(exc) from None
        return fan_out_from_proto(response)

    async def submit(
        self,
        target: str | None = None,
        text: str | None = None,
        *,
        workflow: str | Mapping[str, Any] | None = None,
        data: JSONValue | None = None,
        options: Mapping[str, Any] | None = None,
        state: Mapping[str, Any] | None = None,
        job_timeout: float | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Start a call to ``target`` (or a ``workflow`` run) as a background job.

        A retry with the same ``idempotency_key`` returns the job the key first made.
        """
        request = build_job(
            target,
            text,
            workflow=workflow,
            data=data,
            options=options,
            state=state,
            timeout=job_timeout,
            idempotency_key=idempotency_key,
        )
        return job_from_proto(await self._job_call("SubmitJob", request))

    async def job(self, job_id: str) -> Job:
        request = gateway_pb2.GetJobRequest(job_id=job_id)
        return job_from_proto(await self._job_call("GetJob", request))

    async def cancel_job(self, job_id: str) -> Job:
        """Cancel the job (and its agent calls); returns it once it has stopped."""
        request = gateway_pb2.CancelJobRequest(job_id=job_id)
        return job_from_proto(await self._job_call("CancelJob", request))

    async def resume_job(
        self, job_id: str, text: str | None = None, *, data: JSONValue | None = None
    ) -> Job:
        """Answer the question of a job waiting for input (``job.waiting``): its work runs
        again with the conversation so far. Returns the job, queued again."""
        request = gateway_pb2.ResumeJobRequest(job_id=job_id, message=build_answer(text, data))
        return job_from_proto(await self._job_call("ResumeJob", request))

    async def jobs(self, *, limit: int = 100, state: str | None = None) -> list[Job]:
        request = gateway_pb2.ListJobsRequest(limit=limit, state=job_state_filter(state))
        response = await self._job_call("ListJobs", request)
        return [job_from_proto(job) for job in response.jobs]

    async def watch_job(
        self,
        job_id: str,
        *,
        from_offset: int = 0,
        timeout: float | None = None,
        until_input: bool = False,
    ) -> AsyncIterator[JobEvent]:
        """The job's events from ``from_offset`` on, live until the job has ended
        (no deadline unless ``timeout`` is given: jobs may run long); with
        ``until_input``, or until it waits for input (``job.waiting``)."""
        request = gateway_pb2.WatchJobRequest(
            job_id=job_id, from_offset=from_offset, until_input=until_input
        )
        with client_span(_WATCH_JOB, self._metadata) as call_metadata:
            call = self._stub.WatchJob(request, timeout=timeout, metadata=call_metadata)
            try:
                async for event in call:
                    yield job_event_from_proto(event)
            except grpc.aio.AioRpcError as exc:
                raise CallError.from_rpc(exc) from None
            finally:
                call.cancel()

    async def wait_job(
        self, job_id: str, *, from_offset: int = 0, timeout: float | None = None
    ) -> Job:
        """Follow the job from ``from_offset`` until it ends or waits for input
        (``job.waiting``: answer with :meth:`resume_job`, then wait again from the
        ``event_count`` it returns); the job as it then stands."""
        async for _ in self.watch_job(
            job_id, from_offset=from_offset, timeout=timeout, until_input=True
        ):
            pass
        return await self.job(job_id)

    # -- sessions: a ``context_id`` names one; the gateway keeps its turns ------------------

    async def session(self, context_id: str) -> Session:
        """The caller's session ``context_id`` with its turns (NOT_FOUND: none)."""
        request = gateway_pb2.GetSessionRequest(context_id=context_id)
        return session_from_proto(await self._job_call("GetSession", request))

    async def sessions(self, *, limit: int = 100) -> list[Session]:
        """The caller's sessions, most recently used first (without their turns)."""
        request = gateway_pb2.ListSessionsRequest(limit=limit)
        response = await self._job_call("ListSessions", request)
        return [session_from_proto(s) for s in response.sessions]

    async def delete_session(self, context_id: str) -> None:
        """Forget the caller's session ``context_id`` (NOT_FOUND: none)."""
        await self._job_call(
            "DeleteSession", gateway_pb2.DeleteSessionRequest(context_id=context_id)
        )

    async def _job_call(self, method: str, request: Any) -> Any:
        with client_span(f"agentmesh.v1.Gateway/{method}", self._metadata) as call_metadata:
            try:
                return await getattr(self._stub, method)(
                    request, timeout=self._timeout, metadata=call_metadata
                )
            except grpc.aio.AioRpcError as exc:
                raise CallError.from_rpc(exc) from None
