"""Jobs waiting for input under races: a resume, a cancel and the input timeout of one waiting
job are compare-and-sets in the store, so exactly one of them wins, and the caller learns
which. In the store itself (three writers at once), and through the gateway's RPCs, on the
memory store and a real Redis alike."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from jobtest import TERMINAL, gateway_stub, invoke_job, watch
from meshtest import running_agent, running_gateway

from agentmesh.agents.calculator.agent import CalculatorAgent
from agentmesh.gateway.jobstore import JobStore, MemoryJobStore, RedisJobStore
from agentmesh.v1 import gateway_pb2, gateway_pb2_grpc
from agentmesh.v1 import messages_pb2 as pb

pytestmark = pytest.mark.slow

WAITING = pb.TASK_STATE_INPUT_REQUIRED
Answer = tuple[grpc.StatusCode, str]


@pytest.fixture
async def job_store(store_settings: dict[str, Any]) -> AsyncIterator[JobStore]:
    if not store_settings:
        yield MemoryJobStore()
        return
    client = aioredis.Redis.from_url(store_settings["redis_url"])
    store = RedisJobStore(client)
    await store.start()
    try:
        yield store
    finally:
        await store.close()
        await client.aclose()


async def parked(store: JobStore) -> gateway_pb2.Job:
    """A job taken by a runner and parked by it in INPUT_REQUIRED (its lease dropped)."""
    now = time.time()
    job = gateway_pb2.Job(
        job_id=uuid.uuid4().hex, state=pb.TASK_STATE_SUBMITTED, kind="invoke", created_at=now
    )
    await store.create(job, invoke_job("calculator", "solve", "x"), owner="someone")
    claim = await store.claim(15.0, wait=1.0)
    assert claim is not None
    job.state = pb.TASK_STATE_WORKING
    assert (await store.transition(job, allowed=frozenset({1}), fence=claim.fence)).won
    job.state, job.message, job.input_deadline = WAITING, "What is x?", now - 1
    job.inputs.add(question="What is x?", agent="calculator")
    waiting = await store.transition(job, allowed=frozenset({2}), fence=claim.fence)
    assert waiting.won
    await store.release(claim)
    assert waiting.job is not None
    return waiting.job


def _as(job: gateway_pb2.Job, state: pb.TaskState.ValueType, **fields: Any) -> gateway_pb2.Job:
    changed = gateway_pb2.Job()
    changed.CopyFrom(job)
    changed.state = state
    for name, value in fields.items():
        setattr(changed, name, value)
    return changed


async def test_resume_cancel_and_timeout_of_a_waiting_job_exactly_one_wins(
    job_store: JobStore,
) -> None:
    rng = random.Random(1818)
    outcomes: list[str] = []
    for _ in range(40):
        job = await parked(job_store)
        writers = {
            "resume": job_store.transition(
                _as(job, pb.TASK_STATE_SUBMITTED, message=""),
                allowed=frozenset({WAITING}),
                requeue=True,
            ),
            "cancel": job_store.transition(
                _as(job, pb.TASK_STATE_CANCELED, code=1), allowed=frozenset({1, 2, WAITING})
            ),
            "timeout": job_store.transition(
                _as(job, pb.TASK_STATE_FAILED, code=4), allowed=frozenset({WAITING})
            ),
        }
        order = list(writers)
        rng.shuffle(order)
        results = dict(zip(order, await asyncio.gather(*(writers[n] for n in order)), strict=True))
        winners = {name for name, result in results.items() if result.won}
        stored = await job_store.get(job.job_id)
        events = await job_store.events(job.job_id, 0, wait=0)
        assert stored is not None
        states = [e.state.state for e in events if e.HasField("state")]
        after = states[states.index(WAITING) + 1 :]
        first = {pb.TASK_STATE_SUBMITTED: "resume", pb.TASK_STATE_CANCELED: "cancel"}.get(
            after[0], "timeout"
        )
        outcomes.append(first)
        # Exactly one writer took the job out of INPUT_REQUIRED; the others were refused,
        # except a cancel that came after the answer (it cancels the job queued again).
        assert first in winners
        assert winners - {first} <= ({"cancel"} if first == "resume" else set())
        assert after == ([pb.TASK_STATE_SUBMITTED, pb.TASK_STATE_CANCELED] if len(winners) == 2
                         else [results[first].job.state])  # type: ignore[union-attr]  # fmt: skip
        assert stored.state == after[-1]
        if stored.state == pb.TASK_STATE_SUBMITTED:
            claim = await job_store.claim(15.0, wait=1.0)  # queued again, with a new fence
            assert claim is not None
            assert claim.job_id == job.job_id
            await job_store.release(claim)
        assert await job_store.overdue(time.time()) == []  # no longer waiting, whoever won
    assert set(outcomes) == {"resume", "cancel", "timeout"}  # the shuffles make each win


@contextlib.asynccontextmanager
async def calculator_gateway(store_settings: dict[str, Any], **settings: Any) -> AsyncIterator[str]:
    async with (
        running_agent(CalculatorAgent()) as (_, agent_address),
        running_gateway({"calculator": [agent_address]}, **settings, **store_settings) as (
            _,
            address,
        ),
    ):
        yield address


async def waiting_job(stub: gateway_pb2_grpc.GatewayAsyncStub, text: str) -> str:
    job = await stub.SubmitJob(invoke_job("calculator", "solve", text), timeout=10)
    request = gateway_pb2.WatchJobRequest(job_id=job.job_id, until_input=True)
    events = [event async for event in stub.WatchJob(request, timeout=30)]
    assert events[-1].state.state == WAITING
    return str(job.job_id)


async def answered(
    stub: gateway_pb2_grpc.GatewayAsyncStub, job_id: str, text: str
) -> tuple[grpc.StatusCode, str]:
    request = gateway_pb2.ResumeJobRequest(
        job_id=job_id, message=pb.Message(parts=[pb.Part(text=text)])
    )
    try:
        await stub.ResumeJob(request, timeout=10)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def left_waiting_for(events: list[gateway_pb2.JobEvent]) -> list[int]:
    """The states a job went to right after each time it waited for input."""
    states = [e.state.state for e in events if e.HasField("state")]
    return [states[i + 1] for i, s in enumerate(states[:-1]) if s == WAITING]


async def test_resume_against_cancel_through_the_gateway(store_settings: dict[str, Any]) -> None:
    rng = random.Random(77)
    async with calculator_gateway(store_settings) as address, gateway_stub(address) as stub:

        async def race(
            index: int,
        ) -> tuple[tuple[grpc.StatusCode, str], list[gateway_pb2.JobEvent]]:
            job_id = await waiting_job(stub, f"x + {index}")
            cancel = stub.CancelJob(gateway_pb2.CancelJobRequest(job_id=job_id), timeout=10)
            if rng.random() < 0.5:
                resumed, _ = await asyncio.gather(answered(stub, job_id, "1"), cancel)
            else:
                _, resumed = await asyncio.gather(cancel, answered(stub, job_id, "1"))
            return resumed, await watch(stub, job_id)

        results = await asyncio.gather(*(race(i) for i in range(24)))
    for (code, message), events in results:
        assert events[-1].state.state in TERMINAL
        [next_state] = left_waiting_for(events)  # it left INPUT_REQUIRED exactly once
        if code == grpc.StatusCode.OK:
            assert next_state == pb.TASK_STATE_SUBMITTED  # the answer won
        else:
            assert code == grpc.StatusCode.FAILED_PRECONDITION
            assert "is CANCELED, not INPUT_REQUIRED" in message
            assert next_state == pb.TASK_STATE_CANCELED


async def test_resume_against_the_input_timeout_through_the_gateway(
    store_settings: dict[str, Any],
) -> None:
    rng = random.Random(99)
    async with (
        calculator_gateway(store_settings, job_input_timeout=0.25) as address,
        gateway_stub(address) as stub,
    ):

        async def race(
            index: int,
        ) -> tuple[tuple[grpc.StatusCode, str], list[gateway_pb2.JobEvent]]:
            job_id = await waiting_job(stub, f"y * {index}")
            await asyncio.sleep(rng.uniform(0, 0.4))  # before, around or after the deadline
            return await answered(stub, job_id, "2"), await watch(stub, job_id)

        results = await asyncio.gather(*(race(i) for i in range(24)))
    for (code, message), events in results:
        [next_state] = left_waiting_for(events)
        ended = events[-1].state
        if code == grpc.StatusCode.OK:
            assert next_state == pb.TASK_STATE_SUBMITTED
            assert ended.state == pb.TASK_STATE_COMPLETED
        else:
            assert code == grpc.StatusCode.FAILED_PRECONDITION
            assert "is FAILED, not INPUT_REQUIRED" in message
            assert next_state == pb.TASK_STATE_FAILED
            assert ended.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
            assert "waited for input" in ended.message
