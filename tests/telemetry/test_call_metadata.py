"""A call's metadata is read from gRPC once, whichever layers ask, and never mixed up."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc

from agentmesh.telemetry.handlers import call_metadata


class _Counting:
    """A servicer context that counts how often its metadata is built."""

    def __init__(self, context: Any) -> None:
        self._context = context
        self.reads = 0

    def invocation_metadata(self) -> Any:
        self.reads += 1
        return self._context.invocation_metadata()


async def _serve(both_read: asyncio.Barrier, context: Any) -> bytes:
    seen: Any = _Counting(context)
    first = call_metadata(seen)
    await both_read.wait()  # the other call has read its own metadata meanwhile
    again = call_metadata(seen)
    other: Any = _Counting(context)  # another context object is read anew
    call_metadata(other)
    return json.dumps(
        {
            "who": dict(first).get("x-who"),
            "same": again is first,
            "reads": seen.reads,
            "other_reads": other.reads,
        }
    ).encode()


async def test_each_call_reads_its_own_metadata_once() -> None:
    server = grpc.aio.server()
    both_read = asyncio.Barrier(2)

    async def serve(request: bytes, context: Any) -> bytes:
        return await _serve(both_read, context)

    handler: Any = grpc.unary_unary_rpc_method_handler(serve)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("test.Meta", {"Read": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            read: Any = channel.unary_unary("/test.Meta/Read")
            answers = await asyncio.gather(
                *(read(b"", metadata=(("x-who", who),), timeout=5) for who in ("ann", "bob"))
            )
    finally:
        await server.stop(0)
    assert [json.loads(a) for a in answers] == [
        {"who": who, "same": True, "reads": 1, "other_reads": 1} for who in ("ann", "bob")
    ]
