"""Offloaded work runs in work processes and stops when its call ends (real servers, port 0)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from busywork import busy
from meshtest import running_agent, wait_until
from prometheus_client import REGISTRY

from agentmesh.runtime import WorkPool
from agentmesh.v1 import agent_pb2_grpc
from agentmesh.v1 import messages_pb2 as pb

pytestmark = pytest.mark.slow


def request(skill: str, text: str = "x") -> pb.InvokeRequest:
    return pb.InvokeRequest(skill=skill, message=pb.Message(parts=[pb.Part(text=text)]))


def abandoned(outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "agentmesh_work_abandoned_total", {"agent": "busy", "outcome": outcome}
    )
    return value or 0.0


@pytest.fixture
async def stub() -> AsyncIterator[agent_pb2_grpc.AgentAsyncStub]:
    """The busy agent on a real server with one work process."""
    async with (
        running_agent(busy, work_processes=1) as (_, address),
        grpc.aio.insecure_channel(address) as channel,
    ):
        yield agent_pb2_grpc.AgentStub(channel)


async def _worker_pid(stub: agent_pb2_grpc.AgentAsyncStub) -> int:
    reply = await stub.Invoke(request("pid"), timeout=30)
    return int(reply.artifacts[0].parts[0].text)


async def _spinning(marker: Path) -> int:
    """Wait until the work process has started spinning; its pid."""
    await wait_until(marker.exists, attempts=600)
    await wait_until(lambda: marker.stat().st_size > 0)
    return int(await asyncio.to_thread(marker.read_text))


async def test_work_runs_in_another_process_and_errors_keep_their_status(
    stub: agent_pb2_grpc.AgentAsyncStub,
) -> None:
    worker = await _worker_pid(stub)
    assert worker != os.getpid()
    assert await _worker_pid(stub) == worker  # the process is reused

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Invoke(request("refuse", "nope"), timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == "text: 'nope' is not acceptable"

    with pytest.raises(grpc.aio.AioRpcError) as crashed:
        await stub.Invoke(request("crash"), timeout=30)
    assert crashed.value.code() == grpc.StatusCode.INTERNAL
    assert "ZeroDivisionError" not in (crashed.value.details() or "")
    assert await _worker_pid(stub) == worker


async def test_a_cancelled_call_stops_its_work_and_the_process_serves_the_next_call(
    stub: agent_pb2_grpc.AgentAsyncStub, tmp_path: Path
) -> None:
    await _worker_pid(stub)
    before = abandoned("interrupted")
    marker = tmp_path / "spinning"
    call = stub.Invoke(request("spin", str(marker)), timeout=60)
    pending = asyncio.ensure_future(call)
    spinner = await _spinning(marker)
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
    await wait_until(lambda: abandoned("interrupted") == before + 1)
    # One work process, and spin never returns on its own: this call is only
    # answered because the cancelled work stopped, in the same process.
    assert await _worker_pid(stub) == spinner


async def test_work_past_its_deadline_stops(
    stub: agent_pb2_grpc.AgentAsyncStub, tmp_path: Path
) -> None:
    await _worker_pid(stub)  # the process is up, so the work starts well within the deadline
    before = abandoned("interrupted")
    marker = tmp_path / "spinning"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Invoke(request("spin", str(marker)), timeout=3)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    spinner = await _spinning(marker)
    await wait_until(lambda: abandoned("interrupted") == before + 1)
    assert await _worker_pid(stub) == spinner


async def test_work_that_ignores_the_interrupt_is_killed_and_replaced(
    stub: agent_pb2_grpc.AgentAsyncStub, tmp_path: Path
) -> None:
    await _worker_pid(stub)
    before = abandoned("killed")
    marker = tmp_path / "spinning"
    pending = asyncio.ensure_future(stub.Invoke(request("spin_deaf", str(marker)), timeout=60))
    deaf = await _spinning(marker)
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await pending
    await wait_until(lambda: abandoned("killed") == before + 1)
    with pytest.raises(ProcessLookupError):
        os.kill(deaf, 0)
    assert await _worker_pid(stub) != deaf  # a fresh process took its place


async def test_a_function_of_the_main_script_is_refused_with_a_reason() -> None:
    def work() -> None:
        pass

    work.__module__ = "__main__"
    pool = WorkPool(1)
    with pytest.raises(TypeError, match="not in the script run as __main__"):
        await pool.run(work)
    await pool.close()
    assert pool.pids == []  # nothing was started
