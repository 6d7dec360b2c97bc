"""What ``bench.proxy --parse`` adds to the bare proxy: the gRPC work any hop that reads
requests must do (imported only in that mode, so the bare proxy loads no agentmesh code).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from agentmesh.runtime.principal import principal_metadata
from agentmesh.telemetry.handlers import (
    Behaviour,
    Handler,
    MethodInterceptor,
    PerMethod,
    chained,
    produced_responses,
    rewrap,
)
from agentmesh.v1 import messages_pb2 as pb

Context = grpc.aio.ServicerContext[Any, Any]


MESSAGES: dict[str, tuple[Any, Any]] = {
    "Invoke": (pb.InvokeRequest, pb.InvokeResponse),
    "InvokeStream": (pb.InvokeRequest, pb.InvokeEvent),
}
PRINCIPAL = principal_metadata("anonymous")


class _Nothing(MethodInterceptor):
    """A server interceptor that wraps each method's handler (once) and adds no work."""

    def __init__(self) -> None:
        self._wrapped = PerMethod()

    def intercept(self, details: grpc.HandlerCallDetails, handler: Handler) -> Handler:
        return self._wrapped.get(details.method, handler, _same)


def _same(handler: Handler) -> Handler:
    def unary(behaviour: Behaviour) -> Behaviour:
        async def serve(request: Any, context: Context) -> Any:
            return await behaviour(request, context)

        return serve

    def stream(behaviour: Behaviour) -> Behaviour:
        async def serve(request: Any, context: Context) -> AsyncIterator[Any]:
            async for item in produced_responses(behaviour(request, context)):
                yield item

        return serve

    return rewrap(handler, unary=unary, stream=stream)


def message_types(method: str) -> tuple[Any, Any]:
    """The request and answer types ``method`` (a full name) is parsed into (None: bytes)."""
    return MESSAGES.get(method.rpartition("/")[2], (None, None))


def interceptors() -> list[grpc.aio.ServerInterceptor]:
    """One server interceptor that wraps each method's handler once and adds no work."""
    return chained([_Nothing()])
