"""Jobs through a real gateway: in memory, and shared through a real Redis server."""

from __future__ import annotations

import grpc
import pytest
from jobtest import Holder, gateway_stub, invoke_job, watch
from meshtest import ProbeAgent, running_agent, running_gateway

from agentmesh.runtime.wire import result_from_proto
from agentmesh.v1 import gateway_pb2, gateway_pb2_grpc
from agentmesh.v1 import messages_pb2 as pb


async def test_invoke_job_runs_and_its_events_can_be_replayed_from_an_offset() -> None:
    async with (
        running_agent(ProbeAgent()) as (_, agent_address),
        running_gateway({"probe": [agent_address]}) as (_, address),
        gateway_stub(address) as stub,
    ):
        job = await stub.SubmitJob(invoke_job("probe", "spell", "abc"), timeout=10)
        assert job.state == pb.TASK_STATE_SUBMITTED
        assert (job.kind, job.description) == ("invoke", "probe/spell")
        events = await watch(stub, job.job_id)
        done = await stub.GetJob(gateway_pb2.GetJobRequest(job_id=job.job_id), timeout=10)
        replay = await watch(stub, job.job_id, from_offset=3)
        listed = await stub.ListJobs(gateway_pb2.ListJobsRequest(), timeout=10)
    kinds = [e.WhichOneof("event") for e in events]
    states = [e.state.state for e in events if e.HasField("state")]
    assert states == [pb.TASK_STATE_SUBMITTED, pb.TASK_STATE_WORKING, pb.TASK_STATE_COMPLETED]
    assert [e.offset for e in events] == list(range(len(events)))
    # The agent's own stream (started, three letters, final) sits between the states.
    streamed = [e.invoke.WhichOneof("event") for e in events if e.HasField("invoke")]
    assert streamed == ["started", "partial", "partial", "partial", "final"]
    assert kinds[0] == kinds[1] == kinds[-1] == "state"
    assert done.state == pb.TASK_STATE_COMPLETED
    assert result_from_proto(done.invoke).text == "abc"
    assert done.event_count == len(events)
    assert done.expires_at > done.updated_at
    assert [e.offset for e in replay] == list(range(3, len(events)))
    assert [j.job_id for j in listed.jobs] == [job.job_id]


async def test_cancelling_a_running_job_stops_its_agent_call() -> None:
    holder = Holder()
    async with (
        running_agent(holder) as (_, agent_address),
        running_gateway({"holder": [agent_address]}) as (_, address),
        gateway_stub(address) as stub,
    ):
        job = await stub.SubmitJob(invoke_job("holder", "hold", "x"), timeout=10)
        await holder.wait_for(started=1)
        cancelled = await stub.CancelJob(
            gateway_pb2.CancelJobRequest(job_id=job.job_id), timeout=15
        )
        await holder.wait_for(cancelled=1)  # the agent saw its call cancelled
        events = await watch(stub, job.job_id)
        again = await stub.CancelJob(gateway_pb2.CancelJobRequest(job_id=job.job_id), timeout=15)
    assert cancelled.state == pb.TASK_STATE_CANCELED
    assert cancelled.code == grpc.StatusCode.CANCELLED.value[0]
    assert cancelled.message == "cancelled by request"
    assert events[-1].state.state == pb.TASK_STATE_CANCELED
    assert again == cancelled  # cancelling an ended job changes nothing


async def test_fan_out_job_and_a_job_that_runs_out_of_time() -> None:
    slow = ProbeAgent("holder")
    async with (
        running_agent(ProbeAgent()) as (_, probe_address),
        running_agent(slow) as (_, holder_address),
        running_gateway({"probe": [probe_address], "holder": [holder_address]}) as (_, address),
        gateway_stub(address) as stub,
    ):
        fan = gateway_pb2.SubmitJobRequest()
        fan.fan_out.targets.add(agent="probe", skill="echo")
        fan.fan_out.targets.add(agent="probe", skill="echo")
        fan.fan_out.message.parts.add(text="twice")
        fan_job = await stub.SubmitJob(fan, timeout=10)
        slow_job = await stub.SubmitJob(
            invoke_job("holder", "hold", "x", timeout_seconds=0.5), timeout=10
        )
        await watch(stub, fan_job.job_id)
        await watch(stub, slow_job.job_id)
        fan_done = await stub.GetJob(gateway_pb2.GetJobRequest(job_id=fan_job.job_id), timeout=10)
        slow_done = await stub.GetJob(gateway_pb2.GetJobRequest(job_id=slow_job.job_id), timeout=10)
    assert fan_done.description == "fan-out (2 legs)"
    assert fan_done.fan_out.succeeded == 2
    assert slow_done.state == pb.TASK_STATE_FAILED
    assert slow_done.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    # The job's deadline went down to the agent call (whichever timer fired first).
    [seen] = slow.seen_remaining
    assert seen is not None
    assert 0 < seen < 0.5


async def bad_call(stub: gateway_pb2_grpc.GatewayAsyncStub, call: str) -> None:
    """Make the bad request named ``call``."""
    if call == "submit-empty":
        await stub.SubmitJob(gateway_pb2.SubmitJobRequest(), timeout=10)
    elif call == "submit-unknown":
        await stub.SubmitJob(invoke_job("ghost", "", "x"), timeout=10)
    elif call == "submit-timeout":
        await stub.SubmitJob(invoke_job("probe", "", "x", timeout_seconds=-1), timeout=10)
    elif call == "submit-fanout":
        fan = gateway_pb2.SubmitJobRequest()
        fan.fan_out.message.parts.add(text="x")
        await stub.SubmitJob(fan, timeout=10)
    elif call == "get-missing":
        await stub.GetJob(gateway_pb2.GetJobRequest(job_id="abc123"), timeout=10)
    elif call == "get-bad-id":
        await stub.GetJob(gateway_pb2.GetJobRequest(job_id="../etc"), timeout=10)
    elif call == "get-empty":
        await stub.GetJob(gateway_pb2.GetJobRequest(), timeout=10)
    elif call == "watch-negative":
        job = await stub.SubmitJob(invoke_job("probe", "echo", "x"), timeout=10)
        await watch(stub, job.job_id, from_offset=-1)
    else:
        await stub.ListJobs(gateway_pb2.ListJobsRequest(limit=5000), timeout=10)


@pytest.mark.parametrize(
    ("call", "code", "message"),
    [
        ("submit-empty", grpc.StatusCode.INVALID_ARGUMENT, "work: set invoke, workflow or fan_out"),
        ("submit-unknown", grpc.StatusCode.NOT_FOUND, "agent 'ghost' is not registered"),
        ("submit-timeout", grpc.StatusCode.INVALID_ARGUMENT, "timeout_seconds: must be"),
        ("submit-fanout", grpc.StatusCode.INVALID_ARGUMENT, "targets: name the agents"),
        ("get-missing", grpc.StatusCode.NOT_FOUND, "job 'abc123' does not exist"),
        ("get-bad-id", grpc.StatusCode.INVALID_ARGUMENT, "job_id: not a job id"),
        ("get-empty", grpc.StatusCode.INVALID_ARGUMENT, "job_id: required"),
        ("watch-negative", grpc.StatusCode.INVALID_ARGUMENT, "from_offset: must be 0 or more"),
        ("list-too-many", grpc.StatusCode.INVALID_ARGUMENT, "limit: at most 1000"),
    ],
)
async def test_bad_job_requests_name_the_problem(
    call: str, code: grpc.StatusCode, message: str
) -> None:
    async with (
        running_agent(ProbeAgent()) as (_, agent_address),
        running_gateway({"probe": [agent_address]}) as (_, address),
        gateway_stub(address) as stub,
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await bad_call(stub, call)
    assert caught.value.code() == code
    assert message in (caught.value.details() or "")


async def test_job_limit_refuses_more_work_with_resource_exhausted() -> None:
    holder = Holder()
    async with (
        running_agent(holder) as (_, agent_address),
        running_gateway({"holder": [agent_address]}, max_jobs=1) as (_, address),
        gateway_stub(address) as stub,
    ):
        await stub.SubmitJob(invoke_job("holder", "hold", "x"), timeout=10)
        await holder.wait_for(started=1)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.SubmitJob(invoke_job("holder", "hold", "y"), timeout=10)
        holder.release.set()
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert caught.value.details() == "jobs: 1 jobs are queued or running, the limit is 1"


# -- shared through Redis -----------------------------------------------------


async def test_job_done_on_one_gateway_is_read_back_from_another_after_it_stopped(
    redis_db: str,
) -> None:
    async with running_agent(ProbeAgent()) as (_, agent_address):
        agents = {"probe": [agent_address]}
        async with running_gateway(agents, redis_url=redis_db) as (_, first):
            async with gateway_stub(first) as stub:
                job = await stub.SubmitJob(invoke_job("probe", "echo", "kept"), timeout=10)
                first_events = await watch(stub, job.job_id)
        # The first gateway is stopped; a second one sharing the Redis reads the job back.
        async with (
            running_gateway(agents, redis_url=redis_db) as (_, second),
            gateway_stub(second) as stub,
        ):
            done = await stub.GetJob(gateway_pb2.GetJobRequest(job_id=job.job_id), timeout=10)
            events = await watch(stub, job.job_id)
            listed = await stub.ListJobs(
                gateway_pb2.ListJobsRequest(state=pb.TASK_STATE_COMPLETED), timeout=10
            )
    assert done.state == pb.TASK_STATE_COMPLETED
    assert result_from_proto(done.invoke).text == "kept"
    assert events == first_events
    assert job.job_id in [j.job_id for j in listed.jobs]


async def test_a_stopping_gateway_hands_its_running_job_to_another(redis_db: str) -> None:
    holder = Holder()
    async with running_agent(holder) as (_, agent_address):
        agents = {"holder": [agent_address]}
        async with running_gateway(agents, redis_url=redis_db) as (first, first_address):
            async with gateway_stub(first_address) as stub:
                job = await stub.SubmitJob(invoke_job("holder", "hold", "handed"), timeout=10)
                await holder.wait_for(started=1)
            await first.stop(0)  # mid-call: the job goes back on the queue
        await holder.wait_for(cancelled=1)
        async with running_gateway(agents, redis_url=redis_db) as (_, second):
            await holder.wait_for(started=2)  # the second gateway took the job
            holder.release.set()
            async with gateway_stub(second) as stub:
                events = await watch(stub, job.job_id)
                cancel_ended = await stub.CancelJob(
                    gateway_pb2.CancelJobRequest(job_id=job.job_id), timeout=10
                )
    states = [e.state.state for e in events if e.HasField("state")]
    assert states == [
        pb.TASK_STATE_SUBMITTED,
        pb.TASK_STATE_WORKING,
        pb.TASK_STATE_SUBMITTED,  # handed back by the stopping gateway
        pb.TASK_STATE_WORKING,
        pb.TASK_STATE_COMPLETED,
    ]
    assert result_from_proto(events[-2].invoke.final).text == "done: handed"
    assert cancel_ended.state == pb.TASK_STATE_COMPLETED


async def test_cancel_reaches_the_gateway_running_the_job(redis_db: str) -> None:
    holder = Holder()
    async with running_agent(holder) as (_, agent_address):
        agents = {"holder": [agent_address]}
        async with (
            running_gateway(agents, redis_url=redis_db) as (_, runner_address),
            running_gateway(agents, redis_url=redis_db, job_workers=1) as (_, other_address),
            gateway_stub(runner_address) as runner,
            gateway_stub(other_address) as other,
        ):
            job = await runner.SubmitJob(invoke_job("holder", "hold", "x"), timeout=10)
            await holder.wait_for(started=1)
            cancelled = await other.CancelJob(
                gateway_pb2.CancelJobRequest(job_id=job.job_id), timeout=15
            )
            await holder.wait_for(cancelled=1)
    assert cancelled.state == pb.TASK_STATE_CANCELED
