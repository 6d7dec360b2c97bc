"""Helpers shared by the suite: real servers on 127.0.0.1, port 0, and test agents.

The servers come from the public testing kit (``agentmesh.testing``)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agentmesh.runtime import (
    Agent,
    AgentCard,
    Request,
    Result,
    Skill,
    StreamItem,
)
from agentmesh.runtime.ports import free_ports
from agentmesh.testing import Mesh, running_agent, running_gateway, running_mesh

__all__ = [
    "REPO_ROOT",
    "Mesh",
    "ProbeAgent",
    "free_port",
    "free_port_range",
    "health_status",
    "otel_env",
    "running_agent",
    "running_gateway",
    "running_mesh",
    "service_env",
    "serving",
    "stop_all",
    "wait_until",
]

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A port free right now on 127.0.0.1 that no outgoing connection will take before a
    process binds it (:mod:`agentmesh.runtime.ports`)."""
    return free_ports(1)[0]


def free_port_range(count: int) -> int:
    """The first of ``count`` consecutive such ports."""
    return free_ports(count, consecutive=True)[0]


async def health_status(address: str, service: str = "") -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=2
        )
        return int(reply.status)


async def wait_until(predicate: Callable[[], object], *, attempts: int = 200) -> None:
    """Poll ``predicate`` (sync or async) every 50 ms, a bounded number of times."""
    for _ in range(attempts):
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


def service_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTMESH_")}
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def otel_env(endpoint: str, **extra: str) -> dict[str, str]:
    """A service's environment: OTEL_* pointing at ``endpoint`` and nothing inherited."""
    env = {k: v for k, v in service_env().items() if not k.startswith("OTEL_")}
    env.update(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, OTEL_BSP_SCHEDULE_DELAY="100", **extra)
    return env


async def serving(address: str) -> None:
    """Wait until the service at ``address`` reports SERVING (bounded)."""

    async def check() -> bool:
        try:
            return await health_status(address) == 1
        except grpc.aio.AioRpcError:
            return False

    await wait_until(check, attempts=400)


async def stop_all(processes: Iterable[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each process and wait for it to exit (it flushes its spans on the way)."""
    for process in processes:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0


class ProbeAgent(Agent):
    """A controllable agent for runtime and gateway tests.

    Skills: ``echo`` (returns the text, reports the deadline it saw), ``hold``
    (waits until ``release`` is set: an in-flight call to drain or cancel),
    ``crash`` (raises an unexpected error), ``spell`` (streams the text letter
    by letter).
    """

    card = AgentCard(
        name="probe",
        description="test agent",
        skills=(Skill(id="echo"), Skill(id="hold"), Skill(id="crash"), Skill(id="spell")),
    )

    def __init__(self, name: str = "probe") -> None:
        self.card = AgentCard(name=name, description="test agent", skills=ProbeAgent.card.skills)
        self.seen_remaining: list[float | None] = []
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def invoke(self, request: Request) -> Result:
        self.seen_remaining.append(request.time_remaining())
        if request.skill == "crash":
            raise RuntimeError("secret detail /etc/agentmesh/token=abc123")
        if request.skill == "hold":
            self.entered.set()
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
            return Result.of(text="released")
        if request.skill == "spell":
            return await super().invoke(request)
        return Result.of(text=request.text, data={"agent": self.card.name})

    async def stream(self, request: Request) -> AsyncIterator[StreamItem]:
        if request.skill != "spell":
            yield await self.invoke(request)
            return
        for letter in request.require_text():
            yield letter
