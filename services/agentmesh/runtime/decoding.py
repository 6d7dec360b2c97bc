"""Requests that do not parse end as INVALID_ARGUMENT, on every method of every server.

gRPC deserializes a request before any handler runs; when the bytes are not
the method's message (corrupt protobuf, nesting past protobuf's recursion
limit, a string field that is not UTF-8) the parser raises, and grpc.aio
answers UNKNOWN "Unexpected <class 'DecodeError'>" and logs a traceback.
:class:`RequestDecodingInterceptor` wraps each method's request deserializer so
that a parse failure becomes a marker instead, and the method's handler, seeing
the marker, ends the call with INVALID_ARGUMENT and a plain message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, TypeAlias

import grpc

from agentmesh.telemetry.handlers import MethodInterceptor, PerMethod, produced_responses

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Context = grpc.aio.ServicerContext[Any, Any]


class Undecodable:
    """What the wrapped deserializer returns for bytes that are not its message."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message


def _type_name(deserializer: Callable[[bytes], Any]) -> str:
    owner = getattr(deserializer, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    name = getattr(descriptor, "full_name", None)
    return name if isinstance(name, str) else "the method's request message"


def guarded(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """``deserializer``, returning :class:`Undecodable` where it would raise."""
    problem = (
        f"the request is not a valid {_type_name(deserializer)}: it does not parse as "
        "protobuf (corrupt bytes, nesting deeper than protobuf's recursion limit, or a "
        "string field that is not valid UTF-8)"
    )

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # any parser failure means the bytes are not this message
            return Undecodable(problem)

    return deserialize


async def _refuse(request: Undecodable, context: Context) -> None:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)


async def _checked(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, Undecodable):
            await _refuse(request, context)
        yield request


def guard(handler: Handler) -> Handler:
    """``handler`` with its deserializer guarded and its behaviour refusing the marker."""
    if handler.request_deserializer is None:
        return handler  # the method takes raw bytes: nothing to parse
    serializers: dict[str, Any] = {
        "request_deserializer": guarded(handler.request_deserializer),
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        unary: Any = handler.unary_unary

        async def unary_unary(request: Any, context: Context) -> Any:
            if isinstance(request, Undecodable):
                await _refuse(request, context)
            return await unary(request, context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, **serializers)
    if handler.unary_stream is not None:
        streaming: Any = handler.unary_stream

        async def unary_stream(request: Any, context: Context) -> AsyncIterator[Any]:
            if isinstance(request, Undecodable):
                await _refuse(request, context)
            async for item in produced_responses(streaming(request, context)):
                yield item

        return grpc.unary_stream_rpc_method_handler(unary_stream, **serializers)
    if handler.stream_stream is not None:
        bidi: Any = handler.stream_stream

        async def stream_stream(requests: Any, context: Context) -> AsyncIterator[Any]:
            async for item in produced_responses(bidi(_checked(requests, context), context)):
                yield item

        return grpc.stream_stream_rpc_method_handler(stream_stream, **serializers)
    if handler.stream_unary is not None:
        collect: Any = handler.stream_unary

        async def stream_unary(requests: Any, context: Context) -> Any:
            return await collect(_checked(requests, context), context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, **serializers)
    return handler


class RequestDecodingInterceptor(MethodInterceptor):
    """Applies :func:`guard` to every method (a method's guarded handler is built once)."""

    def __init__(self) -> None:
        self._guarded = PerMethod()

    def intercept(self, details: grpc.HandlerCallDetails, handler: Handler) -> Handler:
        return self._guarded.get(details.method, handler, guard)
