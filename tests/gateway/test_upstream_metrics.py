"""The gateway's per-agent in-flight gauge, read from its replicas' own counts when scraped."""

from __future__ import annotations

import asyncio

from meshtest import ProbeAgent, running_mesh, wait_until
from prometheus_client import REGISTRY

from agentmesh.v1 import messages_pb2 as pb


def _in_flight(agent: str) -> float | None:
    return REGISTRY.get_sample_value("agentmesh_upstream_in_flight", {"agent": agent})


async def test_the_in_flight_gauge_counts_calls_under_way() -> None:
    probe = ProbeAgent("gauged")
    async with running_mesh(probe) as mesh:
        request = pb.InvokeRequest(
            agent="gauged", skill="hold", message=pb.Message(parts=[pb.Part(text="x")])
        )
        held = [asyncio.ensure_future(mesh.stub.Invoke(request, timeout=10)) for _ in range(2)]
        await wait_until(lambda: len(probe.seen_remaining) == 2)  # both reached the agent
        assert _in_flight("gauged") == 2.0
        probe.release.set()
        answers = await asyncio.gather(*held)
        assert [a.state for a in answers] == [pb.TASK_STATE_COMPLETED] * 2
        assert _in_flight("gauged") == 0.0
