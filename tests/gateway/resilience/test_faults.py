"""Fault injection with real agent processes and real signals.

Agents run as subprocesses (``counting_agent.py``) and are stopped with
SIGKILL; the gateway runs in this process so the test can move its breaker
clock forward instead of sleeping through reset timeouts. "No traffic" is
proven by the counts the agent keeps, read by calling the agent directly.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from meshtest import free_port, health_status, service_env, wait_until
from resiliencetest import OffsetClock, breaker_of, gateway_with, request

from agentmesh.gateway.registry import Health
from agentmesh.v1 import agent_pb2_grpc, gateway_pb2, gateway_pb2_grpc
from agentmesh.v1 import messages_pb2 as pb

COUNTING_AGENT = str(Path(__file__).with_name("counting_agent.py"))
Spawn = Callable[..., subprocess.Popen[bytes]]
pytestmark = pytest.mark.slow


async def start_agent(spawn: Spawn, name: str, port: int) -> subprocess.Popen[bytes]:
    process = spawn(
        COUNTING_AGENT, "--port", str(port), "--grace-period", "0",
        env=service_env(PROBE_NAME=name),
    )  # fmt: skip
    await wait_until(lambda: _serving(f"127.0.0.1:{port}"), attempts=400)
    return process


def kill(process: subprocess.Popen[bytes]) -> None:
    process.kill()  # SIGKILL: no drain, connections reset
    process.wait(timeout=10)


async def direct(address: str, skill: str) -> pb.InvokeResponse:
    """Call the agent itself, bypassing the gateway."""
    async with grpc.aio.insecure_channel(address) as channel:
        reply: pb.InvokeResponse = await agent_pb2_grpc.AgentStub(channel).Invoke(
            pb.InvokeRequest(skill=skill, message=pb.Message(parts=[pb.Part(text="-")])),
            timeout=5,
        )
        return reply


def data_of(reply: pb.InvokeResponse) -> dict[str, Any]:
    part = next(p for p in reply.artifacts[0].parts if p.HasField("data"))
    data: dict[str, Any] = json_format.MessageToDict(part.data)
    return data


async def counts(address: str) -> dict[str, Any]:
    return data_of(await direct(address, "count"))


async def test_sigkill_of_one_replica_during_a_burst_fails_no_call(spawn: Spawn) -> None:
    ports = [free_port(), free_port()]
    processes = [await start_agent(spawn, "alpha", port) for port in ports]
    config = {"agents": {"alpha": {"addresses": [f"127.0.0.1:{p}" for p in ports]}}}
    async with gateway_with(config) as (_, stub, _):
        done = 0
        killed = asyncio.Event()
        pids_after_kill: set[int] = set()
        limit = asyncio.Semaphore(12)

        async def one(i: int) -> pb.InvokeResponse:
            nonlocal done
            async with limit:
                sent_after_kill = killed.is_set()
                reply: pb.InvokeResponse = await stub.Invoke(
                    request("alpha", "slow", seconds=0.05), timeout=10
                )
            done += 1
            if done == 40:
                kill(processes[0])  # a dozen calls are in flight, some on this replica
                killed.set()
            elif sent_after_kill:
                pids_after_kill.add(int(data_of(reply)["pid"]))
            return reply

        replies = await asyncio.gather(*(one(i) for i in range(160)))
    assert killed.is_set()
    assert len(replies) == 160  # gather raised on no failure
    assert pids_after_kill == {processes[1].pid}


async def test_open_breaker_fails_fast_without_traffic_then_one_probe_closes_it(
    spawn: Spawn,
) -> None:
    port, backup_port = free_port(), free_port()
    address = f"127.0.0.1:{port}"
    agent = await start_agent(spawn, "alpha", port)
    await start_agent(spawn, "beta", backup_port)
    breaker = {"failure_threshold": 3, "reset_timeout": 30, "first_probe": 30}
    config = {
        "agents": {
            "alpha": {"address": address, "breaker": breaker},
            "alpha-backed": {"address": address, "breaker": breaker, "fallback": "beta"},
            "beta": {"address": f"127.0.0.1:{backup_port}"},
        }
    }
    clock = OffsetClock()
    async with gateway_with(config, clock=clock) as (gateway, stub, _):
        assert (await stub.Invoke(request("alpha"), timeout=5)).agent == "alpha"
        kill(agent)

        # Up to the threshold the agent's own failure comes back; then the breaker opens.
        for _ in range(3):
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await stub.Invoke(request("alpha"), timeout=5)
            assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "agent 'alpha' at" in (failed.value.details() or "")
            # The same failures behind a fallback are answered by it.
            assert (await stub.Invoke(request("alpha-backed"), timeout=5)).agent == "beta"
        info = await breaker_of(stub, "alpha")
        assert info.breaker.state == gateway_pb2.BREAKER_STATE_OPEN
        assert info.breaker.failures == 3

        for _ in range(5):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Invoke(request("alpha"), timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "circuit breaker for agent 'alpha' is open" in (refused.value.details() or "")
            assert (await stub.Invoke(request("alpha-backed"), timeout=5)).agent == "beta"

        # The agent is back (its health says SERVING, which also lets the breaker probe at
        # once) and the reset timeout passes; a crowd arrives; exactly one call probes.
        agent = await start_agent(spawn, "alpha", port)
        entry = gateway.registry.get("alpha")
        assert entry is not None
        await wait_until(lambda: entry.replicas[0].health is Health.SERVING, attempts=400)
        clock.offset += 30
        calls = [
            asyncio.ensure_future(stub.Invoke(request("alpha", "wait"), timeout=20))
            for _ in range(20)
        ]
        # The probe is held by the agent until released; the others end at once.
        await wait_until(lambda: sum(c.done() for c in calls) == 19, attempts=400)
        (probe,) = [c for c in calls if not c.done()]
        refusals = [c.exception() for c in calls if c is not probe]
        assert all(isinstance(e, grpc.aio.AioRpcError) for e in refusals)
        assert {e.code() for e in refusals if isinstance(e, grpc.aio.AioRpcError)} == {
            grpc.StatusCode.UNAVAILABLE
        }
        assert all("probe call is in flight" in str(e) for e in refusals)
        assert (await counts(address))["counts"] == {"wait": 1}
        await direct(address, "release")
        assert (await probe).agent == "alpha"
        info = await breaker_of(stub, "alpha")
        assert info.breaker.state == gateway_pb2.BREAKER_STATE_CLOSED
        assert (await stub.Invoke(request("alpha"), timeout=5)).agent == "alpha"
        assert (await counts(address))["counts"] == {"wait": 1, "echo": 1}


async def test_slow_agent_deadline_exceeded_from_the_gateway_with_a_shorter_deadline(
    spawn: Spawn,
) -> None:
    port = free_port()
    await start_agent(spawn, "slow", port)
    config = {"agents": {"slow": {"address": f"127.0.0.1:{port}"}}}
    async with gateway_with(config, deadline_margin=0.5) as (_, stub, _):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Invoke(request("slow", "slow", seconds=30), timeout=2.0)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # The gateway's own message: it answered before the client's deadline fired.
    assert "agent 'slow' did not answer within" in (info.value.details() or "")
    (seen,) = (await counts(f"127.0.0.1:{port}"))["deadlines"]
    assert 0 < seen < 2.0 - 0.25  # the client's 2 s minus the margin (gRPC may round up)


async def test_invalid_argument_is_neither_retried_nor_counted(spawn: Spawn) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    await start_agent(spawn, "alpha", port)
    config = {"agents": {"alpha": {"address": address, "breaker": {"failure_threshold": 2}}}}
    async with gateway_with(config) as (_, stub, _):
        for _ in range(5):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Invoke(request("alpha", "reject"), timeout=5)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "options.mode: is not one this agent knows" in (info.value.details() or "")
        listed = await breaker_of(stub, "alpha")
        assert listed.breaker.state == gateway_pb2.BREAKER_STATE_CLOSED
        assert listed.breaker.failures == 0
        assert (await stub.Invoke(request("alpha"), timeout=5)).agent == "alpha"
    assert (await counts(address))["counts"] == {"reject": 5, "echo": 1}


# Statuses a client may see while agents die and come back (docs/resilience.md).
DOCUMENTED = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


async def test_chaos_every_call_ends_in_time_with_a_documented_status(spawn: Spawn) -> None:
    rng = random.Random(4)
    ports = [free_port(), free_port()]
    processes = [await start_agent(spawn, "alpha", port) for port in ports]
    config = {
        "agents": {
            "alpha": {
                "addresses": [f"127.0.0.1:{p}" for p in ports],
                "breaker": {"failure_threshold": 5, "reset_timeout": 0.5},
                "max_concurrency": 8,
            }
        }
    }
    outcomes: list[grpc.StatusCode] = []
    async with gateway_with(config) as (_, stub, gateway_address):
        stop = asyncio.Event()

        async def load() -> None:
            while not stop.is_set():
                call = stub.Invoke(request("alpha", "slow", seconds=0.02), timeout=2.0)
                try:
                    # A call that outlives its deadline by far has hung.
                    await asyncio.wait_for(call, timeout=4.0)
                    outcomes.append(grpc.StatusCode.OK)
                except grpc.aio.AioRpcError as exc:
                    outcomes.append(exc.code())
                    await asyncio.sleep(0.02)  # a client pausing before it tries again

        async def chaos() -> None:
            for _ in range(3):
                await wait_until(_more_than(outcomes, len(outcomes) + 30), attempts=400)
                victim = rng.randrange(2)
                kill(processes[victim])
                await asyncio.sleep(0)
                processes[victim] = await start_agent(spawn, "alpha", ports[victim])
            stop.set()

        await asyncio.gather(chaos(), *(load() for _ in range(6)))
        assert await health_status(gateway_address) == 1  # SERVING
        await wait_until(lambda: _answers(stub), attempts=400)  # and answering again
    assert set(outcomes) - {grpc.StatusCode.OK} <= DOCUMENTED
    assert grpc.StatusCode.OK in outcomes


def _more_than(outcomes: list[grpc.StatusCode], count: int) -> Callable[[], bool]:
    return lambda: len(outcomes) >= count


async def _answers(stub: gateway_pb2_grpc.GatewayAsyncStub) -> bool:
    try:
        await stub.Invoke(request("alpha"), timeout=2)
    except grpc.aio.AioRpcError:
        return False
    return True


async def _serving(address: str) -> bool:
    try:
        return await health_status(address) == 1
    except grpc.aio.AioRpcError:
        return False


async def test_callers_with_a_too_short_deadline_leave_the_breaker_closed(spawn: Spawn) -> None:
    port = free_port()
    await start_agent(spawn, "slow", port)
    config: dict[str, Any] = {"agents": {"slow": {"address": f"127.0.0.1:{port}"}}}
    async with gateway_with(config) as (_, stub, _):
        for _ in range(5):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Invoke(request("slow", "slow", seconds=5), timeout=0.06)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        info_after = await breaker_of(stub, "slow")
        assert info_after.breaker.state == gateway_pb2.BREAKER_STATE_CLOSED
        assert info_after.breaker.failures == 0
    # The gateway's own per-agent timeout, when it binds, does count.
    config["agents"]["slow"]["timeout"] = 0.05
    async with gateway_with(config) as (_, stub, _):
        for _ in range(5):
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Invoke(request("slow", "slow", seconds=5), timeout=5)
        opened = await breaker_of(stub, "slow")
        assert opened.breaker.state == gateway_pb2.BREAKER_STATE_OPEN


async def test_one_stopped_replica_of_two_under_load(spawn: Spawn) -> None:
    """SIGSTOP one of two replicas: hedges save the calls sent to it, their lost races eject
    it, and the healthy replica serves the rest."""
    ports = [free_port(), free_port()]
    processes = [await start_agent(spawn, "twin", port) for port in ports]
    config = {
        "agents": {
            "twin": {
                "addresses": [f"127.0.0.1:{p}" for p in ports],
                "idempotent": True,
                "hedge_delay": 0.1,
            }
        }
    }
    stopped = processes[0]
    stopped.send_signal(signal.SIGSTOP)
    try:
        async with gateway_with(config) as (_, stub, _):
            outcomes: list[grpc.StatusCode] = []
            queue = list(range(200))

            async def worker() -> None:
                while queue:
                    queue.pop()
                    try:
                        await stub.Invoke(request("twin"), timeout=2.0)
                        outcomes.append(grpc.StatusCode.OK)
                    except grpc.aio.AioRpcError as exc:
                        outcomes.append(exc.code())

            await asyncio.gather(*(worker() for _ in range(8)))
    finally:
        stopped.send_signal(signal.SIGCONT)
        kill(stopped)
    succeeded = outcomes.count(grpc.StatusCode.OK)
    assert len(outcomes) == 200
    assert succeeded >= 190, f"{succeeded} of 200 succeeded: {set(outcomes)}"
