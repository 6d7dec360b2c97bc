"""FanOut through a real gateway to real agent servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from meshtest import running_mesh

from agentmesh.runtime import Agent, AgentCard, Request, Result, Skill
from agentmesh.runtime.errors import InvalidInput, Unavailable
from agentmesh.runtime.wire import result_from_proto, struct_to_dict
from agentmesh.v1 import gateway_pb2
from agentmesh.v1 import messages_pb2 as pb


class Voter(Agent):
    """Answers ``vote`` with a fixed label and score; or holds, or fails, as told.

    ``mode``: "answer" (default), "hold" (waits until cancelled), "fail"
    (UNAVAILABLE), "reject" (INVALID_ARGUMENT).
    """

    def __init__(self, name: str, label: str = "yes", score: float = 0.5, mode: str = "answer"):
        self.card = AgentCard(
            name=name, description="votes", skills=(Skill(id="vote"), Skill(id="reduce"))
        )
        self.label, self.score, self.mode = label, score, mode
        self.calls = 0
        self.entered = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.received: list[Request] = []

    async def invoke(self, request: Request) -> Result:
        self.calls += 1
        self.received.append(request)
        if request.skill == "reduce":
            return Result.of(text=f"reduced {len(request.message.data['legs'])} legs")
        if self.mode == "hold":
            self.entered.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        if self.mode == "fail":
            raise Unavailable(f"{self.card.name} is out of order")
        if self.mode == "reject":
            raise InvalidInput("message", "not for me")
        return Result.of(
            text=f"{self.label} from {self.card.name}",
            data={"label": self.label, "score": self.score, "by": {self.card.name: True}},
        )


def fan_out(*agents: str, **fields: Any) -> gateway_pb2.FanOutRequest:
    request = gateway_pb2.FanOutRequest(
        targets=[gateway_pb2.Target(agent=a) for a in agents], skill="vote", **fields
    )
    request.message.parts.add(text="should we ship?")
    return request


CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def codes(response: gateway_pb2.FanOutResponse) -> dict[str, str]:
    """Each leg's status code name, by agent."""
    return {leg.agent: CODE_NAMES[leg.code] for leg in response.legs}


async def test_six_legs_one_slow_one_failing_report_each_leg() -> None:
    agents = [Voter(f"v{i}") for i in range(4)]
    slow, broken = Voter("slow", mode="hold"), Voter("broken", mode="fail")
    async with running_mesh(*agents, slow, broken) as mesh:
        request = fan_out("v0", "v1", "slow", "v2", "broken", "v3", leg_timeout_seconds=0.5)
        response = await mesh.stub.FanOut(request, timeout=10)
    assert codes(response) == {
        "v0": "OK",
        "v1": "OK",
        "v2": "OK",
        "v3": "OK",
        "slow": "DEADLINE_EXCEEDED",
        "broken": "UNAVAILABLE",
    }
    assert [leg.agent for leg in response.legs] == ["v0", "v1", "slow", "v2", "broken", "v3"]
    assert (response.succeeded, response.failed) == (4, 2)
    assert "out of order" in response.legs[4].message
    assert result_from_proto(response.legs[0].result).text == "yes from v0"
    assert not response.legs[2].HasField("result")
    assert all(leg.latency_ms > 0 for leg in response.legs)
    assert slow.cancelled.is_set()  # the deadline reached the slow agent


async def test_majority_vote_picks_the_majority_answer() -> None:
    voters = [Voter("a", "ship"), Voter("b", "wait"), Voter("c", "ship"), Voter("d", "ship")]
    async with running_mesh(*voters) as mesh:
        request = fan_out(
            "a", "b", "c", "d", aggregation=gateway_pb2.AGGREGATION_MAJORITY, field="label"
        )
        response = await mesh.stub.FanOut(request, timeout=10)
    assert response.result.state == pb.TASK_STATE_COMPLETED
    assert result_from_proto(response.result).data["label"] == "ship"
    assert struct_to_dict(response.result.metadata) == {"votes": 3, "voters": 4, "answer": "ship"}
    assert response.detail == "3 of 4 legs agreed"


async def test_majority_without_a_winner_is_a_failed_aggregate_with_every_leg() -> None:
    async with running_mesh(Voter("a", "ship"), Voter("b", "wait")) as mesh:
        request = fan_out("a", "b", aggregation=gateway_pb2.AGGREGATION_MAJORITY, field="label")
        response = await mesh.stub.FanOut(request, timeout=10)
    assert response.result.state == pb.TASK_STATE_FAILED
    assert "no majority" in response.detail
    assert response.succeeded == 2


async def test_quorum_returns_when_met_and_cancels_the_rest() -> None:
    fast = [Voter(f"f{i}") for i in range(3)]
    held = [Voter("h0", mode="hold"), Voter("h1", mode="hold")]
    async with running_mesh(*fast, *held) as mesh:
        request = fan_out(
            "h0", "f0", "h1", "f1", "f2", policy=gateway_pb2.PARTIAL_POLICY_QUORUM, quorum=3
        )
        response = await mesh.stub.FanOut(request, timeout=30)
        # Both held agents see their calls cancelled (waited for, not slept for).
        await asyncio.wait_for(
            asyncio.gather(held[0].cancelled.wait(), held[1].cancelled.wait()), 10
        )
    assert codes(response) == {
        "h0": "CANCELLED",
        "h1": "CANCELLED",
        "f0": "OK",
        "f1": "OK",
        "f2": "OK",
    }
    assert response.result.state == pb.TASK_STATE_COMPLETED
    assert response.succeeded == 3


async def test_first_policy_with_first_success_aggregation() -> None:
    held = Voter("held", mode="hold")
    async with running_mesh(held, Voter("quick", "now")) as mesh:
        request = fan_out(
            "held",
            "quick",
            policy=gateway_pb2.PARTIAL_POLICY_FIRST,
            aggregation=gateway_pb2.AGGREGATION_FIRST_SUCCESS,
        )
        response = await mesh.stub.FanOut(request, timeout=30)
        await asyncio.wait_for(held.cancelled.wait(), 10)
    assert result_from_proto(response.result).text == "now from quick"
    assert response.detail == "first success: quick"


async def test_quorum_not_met_reports_failed_aggregate() -> None:
    async with running_mesh(Voter("ok"), Voter("down", mode="fail")) as mesh:
        request = fan_out("ok", "down", policy=gateway_pb2.PARTIAL_POLICY_QUORUM, quorum=2)
        response = await mesh.stub.FanOut(request, timeout=10)
    assert response.result.state == pb.TASK_STATE_FAILED
    assert response.detail.startswith("policy not met: 1 of 2 legs succeeded, 2 needed")


async def test_best_score_merge_and_reduce() -> None:
    voters = [Voter("low", "a", 0.2), Voter("high", "b", 0.9), Voter("mid", "c", 0.5)]
    async with running_mesh(*voters, Voter("boss")) as mesh:
        best = await mesh.stub.FanOut(
            fan_out(
                "low", "high", "mid", aggregation=gateway_pb2.AGGREGATION_BEST_SCORE, field="score"
            ),
            timeout=10,
        )
        merged = await mesh.stub.FanOut(
            fan_out("low", "high", aggregation=gateway_pb2.AGGREGATION_MERGE), timeout=10
        )
        reduced = await mesh.stub.FanOut(
            fan_out(
                "low",
                "high",
                "mid",
                aggregation=gateway_pb2.AGGREGATION_REDUCE,
                aggregator=gateway_pb2.Target(agent="boss", skill="reduce"),
            ),
            timeout=10,
        )
    assert result_from_proto(best.result).data["label"] == "b"
    assert best.detail == "best score = 0.9 from high"
    # Later legs win on scalars; nested objects merge.
    assert result_from_proto(merged.result).data == {
        "label": "b",
        "score": 0.9,
        "by": {"low": True, "high": True},
    }
    assert result_from_proto(reduced.result).text == "reduced 3 legs"


async def test_reduce_sends_every_leg_output_to_the_aggregator() -> None:
    boss = Voter("boss")
    async with running_mesh(Voter("x", "one"), Voter("y", "two"), boss) as mesh:
        await mesh.stub.FanOut(
            fan_out(
                "x",
                "y",
                aggregation=gateway_pb2.AGGREGATION_REDUCE,
                aggregator=gateway_pb2.Target(agent="boss", skill="reduce"),
            ),
            timeout=10,
        )
    (seen,) = boss.received
    assert "[x]\none from x" in seen.text
    assert "[y]\ntwo from y" in seen.text
    legs = seen.message.data["legs"]
    assert [(leg["agent"], leg["data"]["label"]) for leg in legs] == [("x", "one"), ("y", "two")]


async def test_fan_out_by_skill_reaches_every_agent_offering_it() -> None:
    voters = [Voter("p"), Voter("q"), Voter("r")]
    async with running_mesh(*voters) as mesh:
        request = gateway_pb2.FanOutRequest(skill="vote")
        request.message.parts.add(text="hi")
        response = await mesh.stub.FanOut(request, timeout=10)
    assert sorted(leg.agent for leg in response.legs) == ["p", "q", "r"]
    assert [v.calls for v in voters] == [1, 1, 1]


async def test_width_limit_bounds_legs_in_flight() -> None:
    held = [Voter(f"h{i}", mode="hold") for i in range(3)]
    async with running_mesh(*held) as mesh:
        call = mesh.stub.FanOut(fan_out("h0", "h1", "h2", max_width=1), timeout=30)
        await asyncio.wait_for(held[0].entered.wait(), 10)
        # With one slot, the first leg holds it: the others have not been called.
        assert [h.calls for h in held] == [1, 0, 0]
        call.cancel()
        await asyncio.wait_for(held[0].cancelled.wait(), 10)


async def test_caller_errors_from_a_leg_are_reported_not_raised() -> None:
    async with running_mesh(Voter("picky", mode="reject"), Voter("fine")) as mesh:
        response = await mesh.stub.FanOut(fan_out("picky", "fine"), timeout=10)
    assert codes(response) == {"picky": "INVALID_ARGUMENT", "fine": "OK"}
    assert response.legs[0].message == "agent 'picky': message: not for me"


@pytest.mark.parametrize(
    ("request_fields", "code", "message"),
    [
        ({}, grpc.StatusCode.INVALID_ARGUMENT, "targets: name the agents"),
        (
            {"targets": [gateway_pb2.Target(agent="a"), gateway_pb2.Target(agent="nope")]},
            grpc.StatusCode.NOT_FOUND,
            "targets[1]: agent 'nope' is not registered",
        ),
        (
            {"targets": [gateway_pb2.Target(agent="a")], "skill": "vote", "policy": 2, "quorum": 2},
            grpc.StatusCode.INVALID_ARGUMENT,
            "quorum: 2 is more than the 1 legs",
        ),
        (
            {"skill": "vote", "aggregation": gateway_pb2.AGGREGATION_BEST_SCORE},
            grpc.StatusCode.INVALID_ARGUMENT,
            "field: BEST_SCORE needs",
        ),
        (
            {"skill": "vote", "aggregation": gateway_pb2.AGGREGATION_REDUCE},
            grpc.StatusCode.INVALID_ARGUMENT,
            "aggregator: REDUCE needs",
        ),
        (
            {"skill": "vote", "leg_timeout_seconds": -1},
            grpc.StatusCode.INVALID_ARGUMENT,
            "leg_timeout_seconds: must be",
        ),
        (
            {"targets": [gateway_pb2.Target(agent="a")] * 3, "skill": "vote"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "targets: 3 legs is over the limit of 2",
        ),
        (
            {"skill": "nothing"},
            grpc.StatusCode.NOT_FOUND,
            "no registered agent offers skill 'nothing'",
        ),
    ],
)
async def test_bad_requests_name_the_field(
    request_fields: dict[str, Any], code: grpc.StatusCode, message: str
) -> None:
    agent = Voter("a")
    async with running_mesh(agent, max_fanout_legs=2) as mesh:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await mesh.stub.FanOut(gateway_pb2.FanOutRequest(**request_fields), timeout=10)
    assert caught.value.code() == code
    assert message in (caught.value.details() or "")
    assert agent.calls == 0
