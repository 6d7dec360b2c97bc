"""Jobs under races and faults: many callers submitting, cancelling and watching at once,
a runner killed mid-job, a runner whose lease lapsed, retries with one idempotency key,
and one job that tries to hold more than a job may. Memory store and real Redis alike."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from google.protobuf import struct_pb2
from jobtest import TERMINAL, Holder, gateway_stub, invoke_job, watch
from meshtest import ProbeAgent, free_port, running_agent, running_gateway, service_env, serving

from agentmesh.gateway.jobstore import Fenced, MemoryJobStore, RedisJobStore
from agentmesh.runtime import Agent, AgentCard, Request, Skill, StreamItem
from agentmesh.v1 import gateway_pb2, gateway_pb2_grpc
from agentmesh.v1 import messages_pb2 as pb

pytestmark = pytest.mark.slow

STORES = ["memory", "redis"]


class Napper(Agent):
    """``nap`` streams three chunks with short random pauses; counts its calls."""

    card = AgentCard(name="napper", description="test", skills=(Skill(id="nap"),))

    def __init__(self) -> None:
        self.calls = 0

    async def stream(self, request: Request) -> AsyncIterator[StreamItem]:
        self.calls += 1
        for chunk in ("a", "b", "c"):
            await asyncio.sleep(random.uniform(0, 0.01))
            yield chunk


@contextlib.asynccontextmanager
async def gateway_on(
    store: str, redis_db: str | None, agents: dict[str, list[str]], **settings: object
) -> AsyncIterator[tuple[object, str]]:
    if store == "redis":
        settings["redis_url"] = redis_db
    async with running_gateway(agents, **settings) as (gateway, address):
        yield gateway, address


async def emptied_redis(request: pytest.FixtureRequest) -> str:
    """The session's real redis-server (``redis_url``), emptied."""
    url: str = request.getfixturevalue("redis_url")
    client = aioredis.Redis.from_url(url)
    await client.flushdb()
    await client.aclose()
    return url


@pytest.fixture(params=STORES)
async def store_kind(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, str | None]]:
    if request.param == "redis":
        yield "redis", await emptied_redis(request)
    else:
        yield "memory", None


async def test_two_hundred_jobs_cancelled_at_random_moments_by_twenty_callers(
    store_kind: tuple[str, str | None],
) -> None:
    kind, redis_db = store_kind
    napper = Napper()
    rng = random.Random(1515)
    pauses = [[rng.uniform(0, 0.06) for _ in range(10)] for _ in range(20)]
    async with (
        running_agent(napper) as (_, agent_address),
        gateway_on(kind, redis_db, {"napper": [agent_address]}) as (gateway, address),
        gateway_stub(address) as stub,
    ):
        workers = gateway.jobs.live_workers  # type: ignore[attr-defined]

        async def caller(index: int) -> list[tuple[gateway_pb2.Job, list[gateway_pb2.JobEvent]]]:
            done = []
            for n, pause in enumerate(pauses[index]):
                job = await stub.SubmitJob(invoke_job("napper", "nap", f"{index}-{n}"), timeout=20)
                if index % 4 == 0:  # some watchers give up early: the store must not mind
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        await watch_briefly(stub, job.job_id, pause)
                await asyncio.sleep(pause)
                answer = await stub.CancelJob(
                    gateway_pb2.CancelJobRequest(job_id=job.job_id), timeout=20
                )
                done.append((answer, await watch(stub, job.job_id)))
            return done

        results = [r for rs in await asyncio.gather(*(caller(i) for i in range(20))) for r in rs]
        final = {
            answer.job_id: await stub.GetJob(
                gateway_pb2.GetJobRequest(job_id=answer.job_id), timeout=10
            )
            for answer, _ in results
        }
        after = await stub.SubmitJob(invoke_job("napper", "nap", "after"), timeout=10)
        after_events = await watch(stub, after.job_id)
        live = gateway.jobs.live_workers  # type: ignore[attr-defined]

    assert len(results) == 200
    outcomes = {answer.state for answer, _ in results}
    assert outcomes <= {pb.TASK_STATE_CANCELED, pb.TASK_STATE_COMPLETED}
    assert pb.TASK_STATE_CANCELED in outcomes  # the pauses make both happen
    for answer, events in results:
        assert answer.state in TERMINAL
        assert [e.offset for e in events] == list(range(len(events)))  # no offset repeats
        assert events[-1].HasField("state")
        assert events[-1].state.state == answer.state  # the state CancelJob answered stands
        terminal_events = [e for e in events if e.HasField("state") and e.state.state in TERMINAL]
        assert len(terminal_events) == 1
        assert final[answer.job_id].state == answer.state
        assert final[answer.job_id].event_count == len(events)
    assert live == workers == 16
    assert after_events[-1].state.state == pb.TASK_STATE_COMPLETED


async def watch_briefly(stub: gateway_pb2_grpc.GatewayAsyncStub, job_id: str, for_s: float) -> None:
    request = gateway_pb2.WatchJobRequest(job_id=job_id)
    async for _ in stub.WatchJob(request, timeout=max(for_s, 0.001)):
        pass


async def test_a_job_whose_run_raises_ends_failed_and_the_worker_lives_on(
    store_kind: tuple[str, str | None],
) -> None:
    """An unexpected error inside a run (here: the agent's stream breaks the contract)."""
    kind, redis_db = store_kind
    async with (
        running_agent(ProbeAgent()) as (_, agent_address),
        gateway_on(kind, redis_db, {"probe": [agent_address]}, job_workers=1) as (gw, address),
        gateway_stub(address) as stub,
    ):
        crashed = await stub.SubmitJob(invoke_job("probe", "crash", "x"), timeout=10)
        crash_events = await watch(stub, crashed.job_id)
        fine = await stub.SubmitJob(invoke_job("probe", "echo", "still here"), timeout=10)
        fine_events = await watch(stub, fine.job_id)
        live = gw.jobs.live_workers  # type: ignore[attr-defined]
    assert crash_events[-1].state.state == pb.TASK_STATE_FAILED
    assert crash_events[-1].state.code == grpc.StatusCode.INTERNAL.value[0]
    assert fine_events[-1].state.state == pb.TASK_STATE_COMPLETED
    assert live == 1


async def test_two_submits_with_one_idempotency_key_make_one_job_and_one_call(
    store_kind: tuple[str, str | None],
) -> None:
    kind, redis_db = store_kind
    napper = Napper()
    async with (
        running_agent(napper) as (_, agent_address),
        gateway_on(kind, redis_db, {"napper": [agent_address]}) as (_, address),
        gateway_stub(address) as stub,
    ):
        request = invoke_job("napper", "nap", "once")
        request.idempotency_key = "order-42"
        first, second = await asyncio.gather(
            stub.SubmitJob(request, timeout=10), stub.SubmitJob(request, timeout=10)
        )
        events = await watch(stub, first.job_id)
        again = await stub.SubmitJob(request, timeout=10)  # after it ended: still the same job
        other = invoke_job("napper", "nap", "something else")
        other.idempotency_key = "order-42"
        with pytest.raises(grpc.aio.AioRpcError) as reused:
            await stub.SubmitJob(other, timeout=10)
        listed = await stub.ListJobs(gateway_pb2.ListJobsRequest(), timeout=10)
    assert first.job_id == second.job_id == again.job_id
    assert again.state == pb.TASK_STATE_COMPLETED
    assert events[-1].state.state == pb.TASK_STATE_COMPLETED
    assert napper.calls == 1
    assert [j.job_id for j in listed.jobs] == [first.job_id]
    assert reused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "idempotency_key: already used for a different request" in (reused.value.details() or "")


def doubling_workflow(steps: int) -> struct_pb2.Struct:
    """Each step repeats the last one's text 8 times: 1 MB of input would become 8**steps MB."""
    definition = struct_pb2.Struct()
    chain: list[dict[str, Any]] = [{"id": "s0", "compose": {"text": "${input.text}"}}]
    for n in range(1, steps + 1):
        chain.append({"id": f"s{n}", "compose": {"text": f"${{steps.s{n - 1}.output.text}}" * 8}})
    definition.update({"name": "balloon", "steps": chain})
    return definition


async def test_a_workflow_that_would_build_100_mb_fails_with_resource_exhausted(
    store_kind: tuple[str, str | None],
) -> None:
    kind, redis_db = store_kind
    async with (
        gateway_on(kind, redis_db, {}) as (_, address),
        gateway_stub(address) as stub,
    ):
        request = gateway_pb2.SubmitJobRequest()
        request.workflow.definition.CopyFrom(doubling_workflow(3))  # 1 -> 8 -> 64 -> 512 MB
        request.workflow.input.parts.add(text="x" * 1_000_000)
        job = await stub.SubmitJob(request, timeout=20)
        events = await watch(stub, job.job_id)
        done = await stub.GetJob(gateway_pb2.GetJobRequest(job_id=job.job_id), timeout=10)
        listed = await stub.ListJobs(gateway_pb2.ListJobsRequest(limit=1), timeout=10)
        everything = await stub.ListJobs(gateway_pb2.ListJobsRequest(), timeout=10)
    assert events[-1].state.state == pb.TASK_STATE_FAILED
    assert done.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    # Refused at the first step event too large to send, or at the run's budget.
    assert "max_message_bytes" in done.message or "workflow_max_bytes" in done.message
    assert [j.job_id for j in listed.jobs] == [job.job_id]
    assert not listed.jobs[0].HasField("workflow")  # listings carry summaries, not payloads
    assert len(everything.jobs) == 1


async def test_a_job_whose_events_outgrow_max_job_bytes_fails_and_others_are_unharmed() -> None:
    async with (
        running_agent(ProbeAgent()) as (_, agent_address),
        running_gateway({"probe": [agent_address]}, job_max_bytes=256 * 1024) as (_, address),
        gateway_stub(address) as stub,
    ):
        big = await stub.SubmitJob(invoke_job("probe", "spell", "y" * 60_000), timeout=10)
        big_events = await watch(stub, big.job_id)
        small = await stub.SubmitJob(invoke_job("probe", "echo", "fine"), timeout=10)
        small_events = await watch(stub, small.job_id)
    assert big_events[-1].state.state == pb.TASK_STATE_FAILED
    assert big_events[-1].state.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert "max_job_bytes" in big_events[-1].state.message
    assert small_events[-1].state.state == pb.TASK_STATE_COMPLETED


# -- the stores themselves: compare-and-set and fencing ------------------------------


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[MemoryJobStore | RedisJobStore]:
    if request.param == "memory":
        yield MemoryJobStore()
        return
    client = aioredis.Redis.from_url(await emptied_redis(request))
    redis_store = RedisJobStore(client)
    await redis_store.start()
    try:
        yield redis_store
    finally:
        await redis_store.close()
        await client.aclose()


def new_job(job_id: str) -> gateway_pb2.Job:
    return gateway_pb2.Job(job_id=job_id, state=pb.TASK_STATE_SUBMITTED, kind="invoke")


def with_state(job: gateway_pb2.Job, state: pb.TaskState.ValueType) -> gateway_pb2.Job:
    changed = gateway_pb2.Job()
    changed.CopyFrom(job)
    changed.state = state
    return changed


OPEN = frozenset({pb.TASK_STATE_SUBMITTED, pb.TASK_STATE_WORKING})
WORKING = frozenset({pb.TASK_STATE_WORKING})


async def test_a_cancel_and_a_completion_cannot_both_win(
    store: MemoryJobStore | RedisJobStore,
) -> None:
    job = new_job("race1")
    await store.create(job, invoke_job("a", "", "x"), owner="t")
    claim = await store.claim(15, wait=1)
    assert claim is not None
    started = await store.transition(
        with_state(job, pb.TASK_STATE_WORKING), allowed=frozenset({1}), fence=claim.fence
    )
    assert started.won
    cancel, complete = await asyncio.gather(
        store.transition(with_state(job, pb.TASK_STATE_CANCELED), allowed=OPEN),
        store.transition(
            with_state(job, pb.TASK_STATE_COMPLETED), allowed=WORKING, fence=claim.fence
        ),
    )
    assert [cancel.won, complete.won].count(True) == 1
    winner = cancel if cancel.won else complete
    loser = complete if cancel.won else cancel
    assert loser.job is not None
    assert winner.job is not None
    assert loser.job.state == winner.job.state  # the loser learns which state stands
    events = await store.events("race1", 0, wait=0)
    assert [e.offset for e in events] == [0, 1, 2]
    assert [e.state.state for e in events][-1] == winner.job.state


async def test_a_runner_whose_lease_lapsed_cannot_overwrite_the_result(
    store: MemoryJobStore | RedisJobStore,
) -> None:
    job = new_job("fenced1")
    await store.create(job, invoke_job("a", "", "x"), owner="t")
    stale = await store.claim(0.05, wait=1)  # a lease that lapses at once
    assert stale is not None
    await store.transition(
        with_state(job, pb.TASK_STATE_WORKING), allowed=frozenset({1}), fence=stale.fence
    )
    await asyncio.sleep(0.1)
    now = time.time()
    if isinstance(store, RedisJobStore):
        assert await store.lapsed(now) == ["fenced1"]
    # Another replica requeues it (the lapsed-lease path), claims it and finishes it.
    requeued = await store.transition(
        with_state(job, pb.TASK_STATE_SUBMITTED), allowed=OPEN, requeue=True, lapsed_before=now
    )
    assert requeued.won
    fresh = await store.claim(15, wait=1)
    assert fresh is not None
    assert fresh.fence > stale.fence
    await store.transition(
        with_state(job, pb.TASK_STATE_WORKING), allowed=frozenset({1}), fence=fresh.fence
    )
    done = await store.transition(
        with_state(job, pb.TASK_STATE_COMPLETED), allowed=WORKING, fence=fresh.fence
    )
    assert done.won
    # The stale runner wakes up: none of its writes land.
    with pytest.raises(Fenced):
        await store.append("fenced1", gateway_pb2.JobEvent(), fence=stale.fence)
    late = await store.transition(
        with_state(job, pb.TASK_STATE_FAILED), allowed=WORKING, fence=stale.fence
    )
    assert not late.won
    assert not await store.renew(stale, 15)
    stored = await store.get("fenced1")
    assert stored is not None
    assert stored.state == pb.TASK_STATE_COMPLETED


async def test_a_cancelled_watcher_leaves_the_memory_store_working() -> None:
    store = MemoryJobStore()
    await store.create(new_job("w1"), invoke_job("a", "", "x"), owner="t")
    claim = await store.claim(15, wait=1)
    assert claim is not None
    waiters = [
        asyncio.create_task(store.events("w1", 1, wait=30)) for _ in range(100)
    ]  # all waiting for offset 1
    await asyncio.sleep(0)
    for task in waiters[::2]:
        task.cancel()
    await store.transition(
        with_state(new_job("w1"), pb.TASK_STATE_WORKING), allowed=frozenset({1}), fence=claim.fence
    )
    woken = await asyncio.gather(*waiters[1::2])
    assert all(len(events) == 1 and events[0].offset == 1 for events in woken)
    assert all(t.cancelled() for t in waiters[::2])


# -- processes: a killed runner, a storm of watchers, thousands of watchers ----------


def gateway_env(redis_url: str | None, agents: dict[str, str], **extra: str) -> dict[str, str]:
    settings = {f"AGENTMESH_AGENT_{n.upper()}_ADDRESSES": a for n, a in agents.items()}
    if redis_url:
        settings["AGENTMESH_REDIS_URL"] = redis_url
    return service_env(**settings, **extra)


async def test_a_killed_runners_job_is_requeued_past_300_newer_jobs_and_finished(
    spawn: object, redis_db: str
) -> None:
    holder = Holder()
    async with (
        running_agent(holder) as (_, holder_address),
        running_agent(ProbeAgent()) as (_, probe_address),
    ):
        agents = {"holder": [holder_address], "probe": [probe_address]}
        port = free_port()
        runner = spawn(  # type: ignore[operator]
            "-m", "agentmesh.gateway", "--port", str(port),
            env=gateway_env(
                redis_db,
                {"holder": holder_address, "probe": probe_address},
                AGENTMESH_JOB_LEASE="1",
            ),
        )  # fmt: skip
        await serving(f"127.0.0.1:{port}")
        async with gateway_stub(f"127.0.0.1:{port}") as stub:
            job = await stub.SubmitJob(invoke_job("holder", "hold", "orphan"), timeout=10)
            await holder.wait_for(started=1)
            newer = [invoke_job("probe", "echo", f"n{i}") for i in range(300)]
            await asyncio.gather(*(stub.SubmitJob(r, timeout=20) for r in newer))
        runner.kill()  # SIGKILL: no hand-back, the lease just lapses
        runner.wait(timeout=10)
        async with (
            running_gateway(agents, redis_url=redis_db, job_lease=1) as (_, other),
            gateway_stub(other) as stub,
        ):
            await holder.wait_for(started=2)  # requeued and taken by the other gateway
            holder.release.set()
            events = await watch(stub, job.job_id)
    states = [(e.state.state, e.state.message) for e in events if e.HasField("state")]
    assert states[-1][0] == pb.TASK_STATE_COMPLETED
    assert (pb.TASK_STATE_SUBMITTED, "requeued: its runner stopped") in states
    assert [e.offset for e in events] == list(range(len(events)))


STORM_SECONDS = float(os.environ.get("AGENTMESH_TEST_STORM_SECONDS", "12"))


@pytest.mark.parametrize("kind", STORES)
async def test_watchers_with_short_deadlines_never_wedge_the_gateway(
    spawn: object, redis_db: str, kind: str
) -> None:
    """150 watchers with random 0.2-2.5 s deadlines; SubmitJob and CancelJob keep answering,
    and SIGTERM stops the gateway (it used to hang for good)."""
    probe = ProbeAgent()
    async with running_agent(probe) as (_, probe_address):
        port = free_port()
        gateway = spawn(  # type: ignore[operator]
            "-m", "agentmesh.gateway", "--port", str(port), "--grace-period", "2",
            env=gateway_env(redis_db if kind == "redis" else None, {"probe": probe_address}),
        )  # fmt: skip
        address = f"127.0.0.1:{port}"
        await serving(address)
        rng = random.Random(150)
        answered = 0
        async with gateway_stub(address) as stub:
            held = [
                (await stub.SubmitJob(invoke_job("probe", "hold", str(i)), timeout=10)).job_id
                for i in range(5)
            ]
            loop = asyncio.get_running_loop()
            until = loop.time() + STORM_SECONDS

            async def watcher() -> None:
                while loop.time() < until:
                    request = gateway_pb2.WatchJobRequest(job_id=rng.choice(held))
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        async for _ in stub.WatchJob(request, timeout=rng.uniform(0.2, 2.5)):
                            pass

            async def submitter() -> None:
                nonlocal answered
                while loop.time() < until:
                    job = await stub.SubmitJob(invoke_job("probe", "echo", "x"), timeout=10)
                    cancelled = await stub.CancelJob(
                        gateway_pb2.CancelJobRequest(job_id=job.job_id), timeout=10
                    )
                    assert cancelled.state in TERMINAL
                    answered += 1
                    await asyncio.sleep(0.2)

            await asyncio.gather(submitter(), *(watcher() for _ in range(150)))
        gateway.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(gateway.wait, 60)
        log = gateway.stdout.read().decode()
    assert answered > 0
    assert code == 0
    assert "stopped" in log


async def test_two_thousand_watchers_share_a_bounded_set_of_redis_connections(
    redis_db: str,
) -> None:
    holder = Holder()
    client = aioredis.Redis.from_url(redis_db)
    try:
        async with (
            running_agent(holder) as (_, holder_address),
            running_gateway(
                {"holder": [holder_address]}, redis_url=redis_db, redis_max_connections=16
            ) as (_, address),
        ):
            # 20 connections (not one shared subchannel), each carrying 100 streams.
            channels = [
                grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(20)
            ]
            stubs = [gateway_pb2_grpc.GatewayStub(c) for c in channels]
            job = await stubs[0].SubmitJob(invoke_job("holder", "hold", "x"), timeout=10)
            await holder.wait_for(started=1)
            attached = 0
            ready = asyncio.Event()

            async def follow(n: int) -> int:
                nonlocal attached
                request = gateway_pb2.WatchJobRequest(job_id=job.job_id)
                last, seen = 0, 0
                async for event in stubs[n % 20].WatchJob(request, timeout=120):
                    seen += 1
                    if seen == 2:  # SUBMITTED and WORKING: now it waits for more
                        attached += 1
                        if attached == 2000:
                            ready.set()
                    last = event.state.state if event.HasField("state") else last
                return last

            # All at once: a burst past gRPC's default pending-call limit (1,000) is served too.
            watchers = [asyncio.create_task(follow(n)) for n in range(2000)]
            waiting = asyncio.create_task(ready.wait())
            await asyncio.wait([waiting, *watchers], timeout=90, return_when="FIRST_COMPLETED")
            broken = [w.exception() for w in watchers if w.done()]
            assert broken == [], broken[:3]
            assert ready.is_set(), attached  # every watcher is attached and waiting
            during = int((await client.info("clients"))["connected_clients"])
            holder.release.set()
            finals = await asyncio.gather(*watchers)
            after = int((await client.info("clients"))["connected_clients"])
            for channel in channels:
                await channel.close()
    finally:
        await client.aclose()
    assert finals == [pb.TASK_STATE_COMPLETED] * 2000
    # The gateway's pool (16) plus this test's client and the breaker-state clients.
    assert during <= 16 + 4
    assert after <= 16 + 4


async def test_a_run_whose_step_outputs_pass_the_workflow_budget_is_stopped() -> None:
    """Each step's text is rendered within what the run may still hold, or refused."""
    definition = struct_pb2.Struct()
    steps: list[dict[str, Any]] = [
        {"id": f"s{n}", "compose": {"text": "${input.text}" * 3}} for n in range(6)
    ]
    definition.update({"name": "wide", "steps": steps})
    request = gateway_pb2.RunWorkflowRequest(definition=definition)
    request.input.parts.add(text="z" * 1_000_000)
    async with (
        running_gateway({}, workflow_max_bytes=8 * 1024 * 1024) as (_, address),
        gateway_stub(address) as stub,
    ):
        finished: list[str] = []

        async def run() -> None:
            async for event in stub.RunWorkflow(request, timeout=60):
                if event.HasField("step_finished"):
                    finished.append(event.step_finished.step)

        with pytest.raises(grpc.aio.AioRpcError) as stopped:
            await run()
        listed = await stub.ListJobs(gateway_pb2.ListJobsRequest(), timeout=10)
    assert stopped.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "workflow_max_bytes" in (stopped.value.details() or "")
    assert finished[:2] == ["s0", "s1"]  # 3 MB each fit; the third would pass 8 MiB
    assert "s3" not in finished
    assert list(listed.jobs) == []
