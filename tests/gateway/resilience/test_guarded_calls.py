"""Bulkhead, fallback, hedging and the per-client rate limit, with agents in this process."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from meshtest import ProbeAgent, running_agent, wait_until
from resiliencetest import breaker_of, gateway_with, request

from agentmesh.runtime import Request, Result
from agentmesh.v1 import gateway_pb2


class QuickProbe(ProbeAgent):
    """Answers ``hold`` at once: the fast replica next to a ProbeAgent that holds."""

    async def invoke(self, request: Request) -> Result:
        if request.skill == "hold":
            return Result.of(text="quick")
        return await super().invoke(request)


async def test_bulkhead_refuses_at_once_and_the_fallback_answers() -> None:
    busy, spare = ProbeAgent("busy"), ProbeAgent("spare")
    async with running_agent(busy) as (_, busy_address), running_agent(spare) as (_, spare_address):
        config = {
            "agents": {
                "busy": {"address": busy_address, "max_concurrency": 1},
                "capped": {"address": busy_address, "max_concurrency": 1, "fallback": "spare"},
                "spare": {"address": spare_address},
            }
        }
        async with gateway_with(config) as (_, stub, _):
            held = asyncio.ensure_future(stub.Invoke(request("busy", "hold"), timeout=10))
            await busy.entered.wait()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Invoke(request("busy"), timeout=5)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "agent 'busy' is at its concurrency limit (1 calls in flight)" in (
                info.value.details() or ""
            )
            listed = await breaker_of(stub, "busy")
            assert (listed.in_flight, listed.max_concurrency) == (1, 1)

            held_too = asyncio.ensure_future(stub.Invoke(request("capped", "hold"), timeout=10))
            await wait_until(lambda: len(busy.seen_remaining) == 2)
            reply = await stub.Invoke(request("capped", text="over the cap"), timeout=5)
            assert reply.agent == "spare"  # the response names who answered
            assert (await breaker_of(stub, "capped")).fallback == "spare"
            busy.release.set()
            assert (await held).agent == "busy"
            assert (await held_too).agent == "busy"


async def test_idempotent_call_is_hedged_on_a_second_replica_and_the_loser_cancelled() -> None:
    slow, quick = ProbeAgent("alpha"), QuickProbe("alpha")
    async with running_agent(slow) as (_, slow_address), running_agent(quick) as (_, quick_address):
        config = {
            "agents": {
                "alpha": {
                    "addresses": [slow_address, quick_address],
                    "idempotent": True,
                    "hedge_delay": 0.05,
                }
            }
        }
        async with gateway_with(config) as (_, stub, _):
            # Round-robin: within two calls one starts on the slow replica.
            replies = [await stub.Invoke(request("alpha", "hold"), timeout=10) for _ in range(2)]
    assert [r.artifacts[0].parts[0].text for r in replies] == ["quick", "quick"]
    assert slow.entered.is_set()
    assert slow.cancelled.is_set()  # the losing attempt was cancelled at the agent


async def test_rate_limit_per_client_says_when_to_retry() -> None:
    config = {"rate_limit": {"clients": {"client:batch": {"rate": 0.5, "burst": 2}}}}
    async with gateway_with(config) as (_, stub, _):
        batch = (("x-agentmesh-client", "batch"),)
        for _ in range(2):
            await stub.ListAgents(gateway_pb2.ListAgentsRequest(), metadata=batch, timeout=5)
        call = stub.ListAgents(gateway_pb2.ListAgentsRequest(), metadata=batch, timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        # Other clients have no limit in this configuration.
        for _ in range(5):
            await stub.ListAgents(gateway_pb2.ListAgentsRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "rate limit exceeded for client:batch; retry in" in (info.value.details() or "")
    trailers = dict(info.value.trailing_metadata() or ())
    assert 0 < float(trailers["retry-after"]) <= 2.0
