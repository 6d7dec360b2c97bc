"""Helpers for the job tests: a holding agent, SubmitJob requests, watching a job."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import grpc

from agentmesh.runtime import Agent, AgentCard, Request, Result, Skill
from agentmesh.v1 import gateway_pb2, gateway_pb2_grpc
from agentmesh.v1 import messages_pb2 as pb

TERMINAL = {pb.TASK_STATE_COMPLETED, pb.TASK_STATE_FAILED, pb.TASK_STATE_CANCELED}


class Holder(Agent):
    """``hold`` waits for ``release``; counts how often a call started and was cancelled."""

    card = AgentCard(name="holder", description="test", skills=(Skill(id="hold"),))

    def __init__(self) -> None:
        self.started = 0
        self.cancelled = 0
        self.changed = asyncio.Condition()
        self.release = asyncio.Event()

    async def _note(self, started: int = 0, cancelled: int = 0) -> None:
        async with self.changed:
            self.started += started
            self.cancelled += cancelled
            self.changed.notify_all()

    async def wait_for(self, *, started: int = 0, cancelled: int = 0) -> None:
        async with self.changed:
            await asyncio.wait_for(
                self.changed.wait_for(
                    lambda: self.started >= started and self.cancelled >= cancelled
                ),
                15,
            )

    async def invoke(self, request: Request) -> Result:
        await self._note(started=1)
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            await self._note(cancelled=1)
            raise
        return Result.of(text=f"done: {request.text}")


def invoke_job(
    agent: str, skill: str, text: str, *, timeout_seconds: float = 0.0
) -> gateway_pb2.SubmitJobRequest:
    request = gateway_pb2.SubmitJobRequest(timeout_seconds=timeout_seconds)
    request.invoke.agent, request.invoke.skill = agent, skill
    request.invoke.message.parts.add(text=text)
    return request


async def watch(
    stub: gateway_pb2_grpc.GatewayAsyncStub, job_id: str, from_offset: int = 0
) -> list[gateway_pb2.JobEvent]:
    request = gateway_pb2.WatchJobRequest(job_id=job_id, from_offset=from_offset)
    return [event async for event in stub.WatchJob(request, timeout=30)]


@contextlib.asynccontextmanager
async def gateway_stub(address: str) -> AsyncIterator[gateway_pb2_grpc.GatewayAsyncStub]:
    async with grpc.aio.insecure_channel(address) as channel:
        yield gateway_pb2_grpc.GatewayStub(channel)
