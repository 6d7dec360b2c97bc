"""Multi-turn jobs: work that asks its caller a question waits in INPUT_REQUIRED (no worker,
no lease) until ResumeJob answers it, from any replica and across a restart on Redis; an
unanswered one fails at its input timeout; a workflow's `ask` step; only the owner answers.
The real calculator (its `solve` skill asks for each unknown name) answers throughout."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
import yaml
from jobtest import TERMINAL, gateway_stub, invoke_job, watch
from meshtest import running_agent, running_gateway

from agentmesh.agents.calculator.agent import CalculatorAgent
from agentmesh.client import AsyncClient, CallError, Reply
from agentmesh.gateway.auth import hash_key, new_key
from agentmesh.runtime.wire import value_to_python
from agentmesh.v1 import gateway_pb2, gateway_pb2_grpc
from agentmesh.v1 import messages_pb2 as pb

STORES = ["memory", "redis"]
WAITING = pb.TASK_STATE_INPUT_REQUIRED


@contextlib.asynccontextmanager
async def calculator_mesh(**settings: Any) -> AsyncIterator[tuple[Any, str]]:
    async with (
        running_agent(CalculatorAgent()) as (_, agent_address),
        running_gateway({"calculator": [agent_address]}, **settings) as (gateway, address),
    ):
        yield gateway, address


async def until_settled(
    stub: gateway_pb2_grpc.GatewayAsyncStub, job_id: str, from_offset: int = 0
) -> list[gateway_pb2.JobEvent]:
    """The job's events from ``from_offset`` until it waits for input or ends (the stream
    ends there by itself: ``until_input``)."""
    request = gateway_pb2.WatchJobRequest(job_id=job_id, from_offset=from_offset, until_input=True)
    events = [event async for event in stub.WatchJob(request, timeout=30)]
    assert events[-1].state.state in TERMINAL | {WAITING}
    return events


def answer(text: str) -> pb.Message:
    return pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text=text)])


async def resume(
    stub: gateway_pb2_grpc.GatewayAsyncStub, job_id: str, text: str, **kwargs: Any
) -> gateway_pb2.Job:
    request = gateway_pb2.ResumeJobRequest(job_id=job_id, message=answer(text))
    job: gateway_pb2.Job = await stub.ResumeJob(request, timeout=10, **kwargs)
    return job


async def failure(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code(), caught.value.details() or ""


async def test_a_job_asks_twice_is_resumed_twice_and_completes(
    store_settings: dict[str, Any],
) -> None:
    async with (
        calculator_mesh(**store_settings) as (_gateway, address),
        gateway_stub(address) as stub,
    ):
        job = await stub.SubmitJob(invoke_job("calculator", "solve", "x * y + 1"), timeout=10)
        first = await until_settled(stub, job.job_id)
        parked = await stub.GetJob(gateway_pb2.GetJobRequest(job_id=job.job_id), timeout=10)
        if store_settings:  # parked: no runner holds a lease on it
            client = aioredis.Redis.from_url(store_settings["redis_url"])
            lease = await client.zscore("agentmesh:jobs:v2:running", job.job_id)
            waiting = await client.zscore("agentmesh:jobs:v2:waiting", job.job_id)
            await client.aclose()
            assert lease is None
            assert waiting is not None
        resumed = await resume(stub, job.job_id, "3")
        second = await until_settled(stub, job.job_id, resumed.event_count)
        again = await resume(stub, job.job_id, "2 + 2")  # an answer may be an expression
        third = await until_settled(stub, job.job_id, again.event_count)
        done = await stub.GetJob(gateway_pb2.GetJobRequest(job_id=job.job_id), timeout=10)
        late = await failure(resume(stub, job.job_id, "5"))

    # The question is in the state event, in GetJob, and in the job's inputs.
    question = first[-1].state
    assert question.state == WAITING
    assert question.message == "What is x?"
    assert parked.state == WAITING
    assert parked.input_deadline > parked.updated_at
    assert [i.question for i in parked.inputs] == ["What is x?"]
    assert parked.inputs[0].agent == "calculator"
    assert value_to_python(parked.inputs[0].data) == {"variable": "x", "expression": "x * y + 1"}
    assert resumed.state == pb.TASK_STATE_SUBMITTED
    assert second[-1].state.state == WAITING
    assert second[-1].state.message == "What is y?"
    assert third[-1].state.state == pb.TASK_STATE_COMPLETED
    assert done.invoke.artifacts[0].parts[0].text == "13"  # 3 * 4 + 1
    assert [i.answer.parts[0].text for i in done.inputs] == ["3", "2 + 2"]
    assert late[0] == grpc.StatusCode.FAILED_PRECONDITION
    assert "is COMPLETED, not INPUT_REQUIRED" in late[1]


async def test_a_parked_job_is_resumed_by_another_gateway_after_a_restart(
    redis_db: str,
) -> None:
    async with calculator_mesh(redis_url=redis_db) as (_, address), gateway_stub(address) as stub:
        job = await stub.SubmitJob(invoke_job("calculator", "solve", "n ** 2"), timeout=10)
        parked = await until_settled(stub, job.job_id)
    # The first gateway is gone; a new one on the same Redis answers and runs it.
    async with calculator_mesh(redis_url=redis_db) as (_, address), gateway_stub(address) as stub:
        resumed = await resume(stub, job.job_id, "12")
        events = await watch(stub, job.job_id, resumed.event_count)
    assert parked[-1].state.state == WAITING
    assert events[-1].state.state == pb.TASK_STATE_COMPLETED
    assert events[-1].state.invoke.artifacts[0].parts[0].text == "144"


async def test_an_unanswered_job_fails_at_its_input_timeout(store_settings: dict[str, Any]) -> None:
    async with (
        calculator_mesh(job_input_timeout=0.3, **store_settings) as (_, address),
        gateway_stub(address) as stub,
    ):
        job = await stub.SubmitJob(invoke_job("calculator", "solve", "rate * 2"), timeout=10)
        events = await watch(stub, job.job_id)
        late = await failure(resume(stub, job.job_id, "1"))
    states = [e.state.state for e in events if e.HasField("state")]
    assert states[-2:] == [WAITING, pb.TASK_STATE_FAILED]
    ended = events[-1].state
    assert ended.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    assert "waited for input" in ended.message
    assert "What is rate?" in ended.message
    assert late[0] == grpc.StatusCode.FAILED_PRECONDITION
    assert "is FAILED" in late[1]


async def test_only_the_owner_answers_and_bad_answers_are_refused(tmp_path: Path) -> None:
    alice, bob, oncall = new_key(), new_key(), new_key()
    everything = {"agents": ["*"], "skills": ["*"], "workflows": ["*"]}
    keys = tmp_path / "keys.yaml"
    keys.write_text(
        yaml.safe_dump(
            {
                "keys": [
                    {"id": "alice", "hash": hash_key(alice), "scopes": everything},
                    {"id": "bob", "hash": hash_key(bob), "scopes": everything},
                    {
                        "id": "oncall",
                        "hash": hash_key(oncall),
                        "scopes": {**everything, "operator": True},
                    },
                ]
            }
        )
    )
    as_alice, as_bob = [("x-api-key", alice)], [("x-api-key", bob)]
    async with (
        calculator_mesh(auth_required=True, auth_keys_file=keys) as (_, address),
        gateway_stub(address) as stub,
    ):
        job = await stub.SubmitJob(
            invoke_job("calculator", "solve", "x + 1"), metadata=as_alice, timeout=10
        )
        await until_settled_as(stub, job.job_id, as_alice)
        missing = await failure(resume(stub, "0" * 32, "1", metadata=as_bob))
        by_bob = await failure(resume(stub, job.job_id, "1", metadata=as_bob))
        by_operator = await failure(resume(stub, job.job_id, "1", metadata=[("x-api-key", oncall)]))
        empty = await failure(
            stub.ResumeJob(gateway_pb2.ResumeJobRequest(job_id=job.job_id), metadata=as_alice)
        )
        by_alice = await resume(stub, job.job_id, "41", metadata=as_alice)
    # Another key gets exactly what a job that does not exist gets: nothing reveals it.
    assert missing[0] == grpc.StatusCode.NOT_FOUND
    assert by_bob == (missing[0], missing[1].replace("0" * 32, job.job_id))
    assert by_operator[0] == grpc.StatusCode.NOT_FOUND  # it sees the job, but did not ask
    assert empty[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert "message.parts" in empty[1]
    assert by_alice.state == pb.TASK_STATE_SUBMITTED


async def until_settled_as(
    stub: gateway_pb2_grpc.GatewayAsyncStub, job_id: str, metadata: list[tuple[str, str]]
) -> None:
    request = gateway_pb2.WatchJobRequest(job_id=job_id)
    async for event in stub.WatchJob(request, metadata=metadata, timeout=30):
        if event.HasField("state") and event.state.state == WAITING:
            return
    raise AssertionError("the job never asked")


ASKING_WORKFLOW: dict[str, Any] = {
    "name": "checked-total",
    "steps": [
        {"id": "total", "agent": "calculator", "input": "${input.text}"},
        {"id": "confirm", "ask": "Is ${steps.total.output.text} the total you expected?"},
        {
            "id": "report",
            "compose": {"text": "${steps.confirm.output.text}: ${steps.total.output.text}"},
        },
    ],
}


def workflow_job(definition: dict[str, Any], text: str) -> gateway_pb2.SubmitJobRequest:
    run = gateway_pb2.RunWorkflowRequest(input=answer(text))
    run.definition.update(definition)
    return gateway_pb2.SubmitJobRequest(workflow=run)


async def test_a_workflow_ask_step_waits_for_its_answer_and_keeps_earlier_steps(
    store_settings: dict[str, Any],
) -> None:
    async with calculator_mesh(**store_settings) as (_, address), gateway_stub(address) as stub:
        job = await stub.SubmitJob(workflow_job(ASKING_WORKFLOW, "2 + 3"), timeout=10)
        asked = await until_settled(stub, job.job_id)
        resumed = await resume(stub, job.job_id, "yes")
        rest = await watch(stub, job.job_id, resumed.event_count)
        run = gateway_pb2.RunWorkflowRequest(input=answer("2 + 3"))
        run.definition.update(ASKING_WORKFLOW)
        direct = await failure(stub.RunWorkflow(run, timeout=10).read())
    waiting = asked[-1].state
    assert waiting.state == WAITING
    assert waiting.message == "Is 5 the total you expected?"
    assert waiting.inputs[0].step == "confirm"
    assert not waiting.inputs[0].agent
    ended = rest[-1].state
    assert ended.state == pb.TASK_STATE_COMPLETED
    assert ended.workflow.result.artifacts[0].parts[0].text == "yes: 5"
    # The calculator step ran once: the resumed run kept its result (the ask step starts
    # once to ask and once to take its answer).
    started = [
        e.workflow.step_started.step
        for e in asked + rest
        if e.HasField("workflow") and e.workflow.HasField("step_started")
    ]
    assert started.count("total") == 1
    assert started.count("confirm") == 2
    assert [s.step for s in ended.workflow.steps] == ["total", "confirm", "report"]
    assert direct[0] == grpc.StatusCode.FAILED_PRECONDITION
    assert "asks for input (step 'confirm')" in direct[1]
    assert "submit it as a job" in direct[1]


async def test_a_declared_asking_workflow_through_invoke_is_refused_and_the_client_resumes(
    tmp_path: Path,
) -> None:
    from agentmesh.gateway import Gateway, GatewayConfig, GatewaySettings
    from agentmesh.gateway.config import AgentConfig

    async with running_agent(CalculatorAgent()) as (_, agent_address):
        config = GatewayConfig(
            agents={"calculator": AgentConfig(addresses=[agent_address])},
            workflows={"checked-total": ASKING_WORKFLOW},
        )
        gateway = Gateway(GatewaySettings(port=0), config)
        port = await gateway.start()
        try:
            async with AsyncClient(f"127.0.0.1:{port}") as client:
                with pytest.raises(CallError) as refused:
                    await client.invoke("workflow:checked-total", "4 * 4")
                job = await client.submit("workflow:checked-total", "4 * 4")
                async for event in client.watch_job(job.job_id):
                    if event.job is not None and event.job.waiting:
                        break
                waiting = await client.job(job.job_id)
                resumed = await client.resume_job(job.job_id, "fine")
                async for _ in client.watch_job(job.job_id, from_offset=resumed.event_count):
                    pass
                done = await client.job(job.job_id)
        finally:
            await gateway.stop(0)
    assert "submit it as a job" in str(refused.value)
    assert waiting.waiting
    assert waiting.question == "Is 16 the total you expected?"
    assert done.state == "completed"
    assert done.result is not None
    assert isinstance(done.result, Reply)
    assert done.result.text == "fine: 16"


def test_ask_steps_are_checked_when_a_workflow_is_loaded() -> None:
    from agentmesh.gateway.workflows.spec import parse_workflow
    from agentmesh.gateway.workflows.validate import compile_workflow
    from agentmesh.runtime.errors import InvalidInput

    def compiled(step: dict[str, Any]) -> None:
        spec = parse_workflow({"name": "w", "steps": [step]})
        compile_workflow(spec, resolve=lambda name: (_ for _ in ()).throw(KeyError(name)))

    with pytest.raises(InvalidInput, match=r"steps\.q: an ask step has no on_error"):
        compiled({"id": "q", "ask": "why?", "on_error": "skip"})
    with pytest.raises(InvalidInput, match=r"steps.q.ask: .*unknown step 'nope'"):
        compiled({"id": "q", "ask": "Is ${steps.nope.output.text} right?"})
    with pytest.raises(InvalidInput, match="exactly one of"):
        compiled({"id": "q", "ask": "why?", "agent": "calculator"})
    compiled({"id": "q", "ask": "Which file?"})
