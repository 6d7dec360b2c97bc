"""The one dispatch path: routes and the cache apply to workflow steps and fan-out legs as to
Invoke; targets name workflows everywhere; workflows compose (fan_out, map, retry_on)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc
import pytest
from meshtest import running_agent

from agentmesh.gateway import Gateway, GatewayConfig, GatewaySettings
from agentmesh.gateway.config import AgentConfig, CacheConfig, RouteConfig
from agentmesh.gateway.workflows.engine import _retry_wait
from agentmesh.gateway.workflows.spec import ErrorPolicy
from agentmesh.runtime import Agent, AgentCard, Request, Result, Skill
from agentmesh.runtime.errors import AgentError, ErrorCode
from agentmesh.runtime.wire import result_from_proto
from agentmesh.v1 import gateway_pb2, gateway_pb2_grpc
from agentmesh.v1 import messages_pb2 as pb


class Counter(Agent):
    """Counts its calls and how many run at once; ``echo``, ``vote`` (data label from the
    agent's own label), ``upper`` (fails on item 7), ``fail`` (raises the code in options)."""

    def __init__(self, name: str = "counter", label: str = "") -> None:
        self.card = AgentCard(
            name=name,
            description="test",
            skills=(Skill(id="echo"), Skill(id="vote"), Skill(id="upper"), Skill(id="fail")),
        )
        self.label = label
        self.calls = 0
        self.running = 0
        self.most = 0

    async def invoke(self, request: Request) -> Result:
        self.calls += 1
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            if request.skill == "vote":
                return Result.of(text=self.label, data={"label": self.label})
            if request.skill == "upper":
                await asyncio.sleep(0.01)  # long enough for calls to overlap
                if request.text == "7":
                    raise AgentError("item 7 is cursed", code=ErrorCode.FAILED_PRECONDITION)
                return Result.of(text=request.text.upper())
            if request.skill == "fail":
                raise AgentError("asked to fail", code=ErrorCode[str(request.options["code"])])
            return Result.of(text=request.text)
        finally:
            self.running -= 1


@contextlib.asynccontextmanager
async def mesh(
    agents: Mapping[str, Agent],
    *,
    cache: frozenset[str] = frozenset(),
    routes: list[dict[str, Any]] | None = None,
    workflows: dict[str, dict[str, Any]] | None = None,
) -> AsyncIterator[gateway_pb2_grpc.GatewayAsyncStub]:
    async with contextlib.AsyncExitStack() as stack:
        configs = {}
        for name, agent in agents.items():
            _, address = await stack.enter_async_context(running_agent(agent))
            configs[name] = AgentConfig(
                addresses=[address], cache=CacheConfig(ttl=60) if name in cache else None
            )
        config = GatewayConfig(
            agents=configs,
            routes=[RouteConfig.model_validate(r) for r in routes or []],
            workflows=workflows or {},
        )
        gateway = Gateway(GatewaySettings(port=0), config)
        port = await gateway.start()
        stack.push_async_callback(gateway.stop, 0)
        channel = await stack.enter_async_context(grpc.aio.insecure_channel(f"127.0.0.1:{port}"))
        yield gateway_pb2_grpc.GatewayStub(channel)


def run_request(definition: Mapping[str, Any], text: str = "") -> gateway_pb2.RunWorkflowRequest:
    request = gateway_pb2.RunWorkflowRequest()
    request.definition.update(dict(definition))
    request.input.parts.add(text=text)
    return request


async def run(
    stub: gateway_pb2_grpc.GatewayAsyncStub, request: gateway_pb2.RunWorkflowRequest
) -> list[gateway_pb2.WorkflowEvent]:
    return [event async for event in stub.RunWorkflow(request, timeout=30)]


def invoke(target: str, text: str, **options: Any) -> pb.InvokeRequest:
    request = pb.InvokeRequest(agent=target)
    request.message.parts.add(text=text)
    if options:
        request.options.update(options)
    return request


async def test_a_cached_agent_answers_a_workflow_step_from_the_cache_the_second_time() -> None:
    counter = Counter()
    steps = {"name": "twice", "steps": [{"id": "a", "agent": "counter", "skill": "echo"}]}
    async with mesh({"counter": counter}, cache=frozenset({"counter"})) as stub:
        first = await run(stub, run_request(steps, "same text"))
        second = await run(stub, run_request(steps, "same text"))
    assert counter.calls == 1
    assert result_from_proto(second[-1].final.result).text == "same text"
    assert first[-1].final.result.artifacts == second[-1].final.result.artifacts


async def test_fan_out_legs_go_through_the_cache_too() -> None:
    counter = Counter()
    fan = gateway_pb2.FanOutRequest(skill="echo")
    fan.targets.add(agent="counter")
    fan.message.parts.add(text="legs")
    async with mesh({"counter": counter}, cache=frozenset({"counter"})) as stub:
        await stub.FanOut(fan, timeout=10)
        again = await stub.FanOut(fan, timeout=10)
    assert counter.calls == 1
    assert again.succeeded == 1


REPORT = {
    "name": "report",
    "steps": [
        {"id": "shout", "agent": "counter", "skill": "upper"},
        {"id": "say", "compose": {"text": "report: ${steps.shout.output.text}"}},
    ],
}


async def test_invoke_and_invoke_stream_take_a_workflow_target_and_routes_send_to_one() -> None:
    counter = Counter()
    routes = [{"name": "reports", "match": {"keywords": ["report"]}, "to": {"workflow": "report"}}]
    async with mesh({"counter": counter}, routes=routes, workflows={"report": REPORT}) as stub:
        answer = await stub.Invoke(invoke("workflow:report", "abc"), timeout=10)
        events = [e async for e in stub.InvokeStream(invoke("workflow:report", "xyz"), timeout=10)]
        routed = await stub.Invoke(invoke("", "please report this"), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await stub.Invoke(invoke("workflow:nope", "x"), timeout=10)
    assert result_from_proto(answer).text == "report: ABC"
    assert answer.agent == "workflow:report"
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "started"
    assert kinds[-1] == "final"
    progress = [(e.progress.step, e.progress.status) for e in events if e.HasField("progress")]
    assert progress == [
        ("shout", "started"),
        ("shout", "succeeded"),
        ("say", "started"),
        ("say", "succeeded"),
    ]
    assert result_from_proto(events[-1].final).text == "report: XYZ"
    assert result_from_proto(routed).text == "report: PLEASE REPORT THIS"
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_fan_out_step_votes_and_a_later_step_branches_on_the_majority() -> None:
    voters = {
        "v1": Counter("v1", "positive"),
        "v2": Counter("v2", "positive"),
        "v3": Counter("v3", "negative"),
    }
    definition = {
        "name": "vote",
        "output": "verdict",
        "steps": [
            {
                "id": "poll",
                "fan_out": {
                    "targets": ["v1/vote", "v2/vote", "v3/vote"],
                    "aggregation": "majority",
                    "field": "label",
                },
            },
            {
                "id": "verdict",
                "when": "steps.poll.output.data.label == 'positive'",
                "compose": {"text": "approved"},
            },
            {
                "id": "veto",
                "when": "steps.poll.output.data.label == 'negative'",
                "compose": {"text": "vetoed"},
            },
        ],
    }
    async with mesh(voters) as stub:
        events = await run(stub, run_request(definition, "ship it?"))
    finished = {
        e.step_finished.step: e.step_finished.outcome for e in events if e.HasField("step_finished")
    }
    assert finished["poll"] == gateway_pb2.STEP_OUTCOME_SUCCEEDED
    assert finished["veto"] == gateway_pb2.STEP_OUTCOME_SKIPPED
    assert result_from_proto(events[-1].final.result).text == "approved"
    assert all(v.calls == 1 for v in voters.values())


async def test_a_map_runs_one_call_per_item_at_most_four_at_once_in_order() -> None:
    counter = Counter()
    definition: dict[str, Any] = {
        "name": "each",
        "steps": [
            {
                "id": "all",
                "map": {
                    "over": "${input.data.items}",
                    "max_parallel": 4,
                    "skill": "upper",
                    "agent": "counter",
                    "input": "${item}",
                },
                "on_error": "skip",
            }
        ],
    }
    request = gateway_pb2.RunWorkflowRequest()
    request.definition.update(definition)
    items: list[Any] = [str(i) if i != 3 else "c" for i in range(20)]
    request.input.parts.add().data.struct_value.update({"items": items})
    async with mesh({"counter": counter}) as stub:
        events = await run(stub, request)
    result = result_from_proto(events[-1].final.result)
    assert counter.calls == 20
    assert 1 < counter.most <= 4
    assert isinstance(result.data, list)
    assert len(result.data) == 20
    assert result.data[7] is None  # the failed item, kept in its slot
    texts = [slot["text"] if slot else None for slot in result.data]
    assert texts[:4] == ["0", "1", "2", "C"]
    assert texts[19] == "19"


@pytest.mark.parametrize(
    ("code", "calls"), [("INVALID_ARGUMENT", 1), ("UNAVAILABLE", 3), ("NOT_FOUND", 1)]
)
async def test_a_steps_retry_skips_invalid_argument_and_retries_unavailable(
    code: str, calls: int
) -> None:
    counter = Counter()
    definition = {
        "name": "flaky",
        "steps": [
            {
                "id": "try",
                "agent": "counter",
                "skill": "fail",
                "options": {"code": code},
                "on_error": {"retry": 2, "retry_delay": 0.01},
            }
        ],
    }
    async with mesh({"counter": counter}) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await run(stub, run_request(definition, "x"))
    assert counter.calls == calls
    assert failed.value.code().name == code


def test_retry_waits_grow_with_each_attempt_up_to_the_cap() -> None:
    policy = ErrorPolicy(retry=5, retry_delay=0.1, retry_backoff=2.0, retry_max_delay=0.5)
    waits = {n: [_retry_wait(policy, n) for _ in range(300)] for n in (1, 2, 3, 4)}
    assert max(waits[1]) <= 0.1
    assert max(waits[2]) <= 0.2
    assert 0.2 < max(waits[3]) <= 0.4  # jittered, so bounded by each attempt's cap
    assert 0.4 < max(waits[4]) <= 0.5


def test_invalid_argument_cannot_be_retried_on() -> None:
    with pytest.raises(ValueError, match="INVALID_ARGUMENT is never retried"):
        ErrorPolicy(retry=1, retry_on=("INVALID_ARGUMENT",))
