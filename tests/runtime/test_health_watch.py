"""A Watch stream's last word is NOT_SERVING however the drain falls against its writes."""

from __future__ import annotations

import asyncio
from typing import Any

from grpc_health.v1 import health_pb2

from agentmesh.runtime.health import NOT_SERVING, SERVING, HealthService

_NO_CONTEXT: Any = None  # Watch never uses its context


async def _statuses(stream: Any) -> list[int]:
    return [reply.status async for reply in stream]


async def test_a_drain_while_the_stream_is_writing_still_sends_not_serving() -> None:
    health = HealthService()
    stream = health.Watch(health_pb2.HealthCheckRequest(), context=_NO_CONTEXT)
    assert (await anext(stream)).status == SERVING
    # The stream is suspended at its yield (gRPC writing SERVING) when the server drains
    # and ends the watches: it must send NOT_SERVING before it ends.
    health.drain()
    health.end_watches()
    assert await _statuses(stream) == [NOT_SERVING]


async def test_a_drain_while_the_stream_waits_sends_not_serving_then_ends() -> None:
    health = HealthService()
    stream = health.Watch(health_pb2.HealthCheckRequest(), context=_NO_CONTEXT)
    assert (await anext(stream)).status == SERVING
    waiting = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)  # one loop step: the stream reads again and waits for a change
    assert not waiting.done()
    health.drain()
    health.end_watches()
    assert (await waiting).status == NOT_SERVING
    assert await _statuses(stream) == []


async def test_a_watch_opened_after_the_drain_answers_once_and_ends() -> None:
    health = HealthService()
    health.drain()
    health.end_watches()
    stream = health.Watch(health_pb2.HealthCheckRequest(), context=_NO_CONTEXT)
    assert await _statuses(stream) == [NOT_SERVING]
