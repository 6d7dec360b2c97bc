"""Wrapping a method's handler in a server interceptor: one way, built once per method.

Every agentmesh server interceptor (telemetry, limits, rate limit,
authentication) puts its work around the handler gRPC found for a method. It
does so with :func:`rewrap` (replace the handler's behaviour, whatever kind of
method it is) or :func:`checked` (await a check before the behaviour), and
keeps the result in a :class:`PerMethod` cache: the generic handler returns the
same handler object for a method on every call, so a wrapper is built on the
method's first call and reused after, and nothing but the work itself happens
per call. What a call needs to know (the authenticated principal, a refusal
decided in ``intercept_service``) travels in a ``contextvars.ContextVar``:
``intercept_service`` and the handler run in the same context.

It lives beside the telemetry interceptor, its first user, because the
runtime's server imports that interceptor: a module of ``agentmesh.runtime``
could not be imported from here without an import cycle.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextvars import ContextVar
from typing import Any, TypeAlias

import grpc

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # generic only to the type checker
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Metadata: TypeAlias = "tuple[tuple[str, str | bytes], ...]"
Behaviour = Callable[..., Any]
"""A handler's function: (request, or request iterator, and context) -> response(s)."""
Check = Callable[[Any, Context], Awaitable[None]]
"""Awaited before the behaviour with the request (None for client-streaming methods);
it refuses the call by aborting it."""
After = Callable[[Any, Context, Any], None]
"""Called with the request, the context and a unary method's response."""

_KINDS = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler, False),
    ("unary_stream", grpc.unary_stream_rpc_method_handler, True),
    ("stream_unary", grpc.stream_unary_rpc_method_handler, False),
    ("stream_stream", grpc.stream_stream_rpc_method_handler, True),
)


def rewrap(
    handler: Handler,
    *,
    unary: Callable[[Behaviour], Behaviour],
    stream: Callable[[Behaviour], Behaviour] | None = None,
) -> Handler:
    """``handler`` with its behaviour replaced by ``unary(behaviour)`` (methods with one
    response) or ``stream(behaviour)`` (streaming responses; default ``unary``)."""
    for kind, build, streaming in _KINDS:
        behaviour = getattr(handler, kind)
        if behaviour is not None:
            wrap = stream if streaming and stream is not None else unary
            wrapped: Handler = build(
                wrap(behaviour),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
            return wrapped
    return handler


def responses(behaviour: Behaviour, request: Any, context: Context) -> AsyncIterator[Any]:
    """A streaming behaviour's responses, whether it yields them or writes them itself.

    A generator is handed back as it is: every wrapper between gRPC and the
    servicer iterates it, and each extra generator in that chain is paid again
    for every streamed message.
    """
    return produced_responses(behaviour(request, context))


def produced_responses(produced: Any) -> AsyncIterator[Any]:
    """What a streaming behaviour returned, as responses: its async generator, or
    (a handler that writes through the context) none, once its coroutine is done."""
    if inspect.isasyncgen(produced):
        return produced
    return _written(produced)


async def _written(produced: Awaitable[Any]) -> AsyncIterator[Any]:
    """Await a writing handler; an async generator that yields nothing."""
    await produced
    nothing: tuple[Any, ...] = ()
    for item in nothing:  # makes this function an async generator
        yield item


def checked(handler: Handler, check: Check, *, after: After | None = None) -> Handler:
    """``handler`` with ``check`` awaited before its behaviour, and ``after`` called with a
    unary method's response. Client-streaming methods' checks see None as the request."""
    whole = handler.stream_unary is None and handler.stream_stream is None

    def unary(behaviour: Behaviour) -> Behaviour:
        async def serve(request: Any, context: Context) -> Any:
            await check(request if whole else None, context)
            response = await behaviour(request, context)
            if after is not None:
                after(request if whole else None, context, response)
            return response

        return serve

    def stream(behaviour: Behaviour) -> Behaviour:
        async def serve(request: Any, context: Context) -> AsyncIterator[Any]:
            await check(request if whole else None, context)
            async for item in responses(behaviour, request, context):
                yield item

        return serve

    return rewrap(handler, unary=unary, stream=stream)


# The call whose metadata was read, and the metadata; set in the call's own task (a
# task the call starts inherits it and keeps that context object alive: a gRPC
# servicer context cannot be weakly referenced, and an id could be reused).
_READ_METADATA: ContextVar[tuple[object, Metadata] | None] = ContextVar(
    "agentmesh_call_metadata", default=None
)


def call_metadata(context: Context) -> Metadata:
    """The call's invocation metadata, read from gRPC once per call.

    ``context.invocation_metadata()`` builds a new tuple of every header on
    each call (about 2 µs); several layers ask for it per call.
    """
    read = _READ_METADATA.get()
    if read is not None and read[0] is context:
        return read[1]
    metadata: Metadata = tuple(context.invocation_metadata() or ())
    _READ_METADATA.set((context, metadata))
    return metadata


class MethodInterceptor(grpc.aio.ServerInterceptor):
    """A server interceptor that puts its work around each method's handler.

    It gets the call's handler from the interceptors after it (or the server)
    and returns :meth:`intercept` of it; unknown methods pass through.
    """

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return self.intercept(handler_call_details, handler)

    def intercept(self, details: grpc.HandlerCallDetails, handler: Handler) -> Handler:
        """The handler to serve this call with: ``handler``, or a wrapper of it (cached)."""
        raise NotImplementedError


class MethodChain(MethodInterceptor):
    """Several :class:`MethodInterceptor` as one server interceptor, first outermost.

    gRPC awaits one ``intercept_service`` per interceptor per call; a chain
    costs one, and builds the composed handler once per method (each
    interceptor's :meth:`MethodInterceptor.intercept` depends on the method
    alone).
    """

    def __init__(self, interceptors: Sequence[MethodInterceptor]) -> None:
        self.interceptors = tuple(interceptors)
        self._built = PerMethod()

    def intercept(self, details: grpc.HandlerCallDetails, handler: Handler) -> Handler:
        return self._built.get(details.method, handler, self._compose, details)

    def _compose(self, handler: Handler, details: grpc.HandlerCallDetails) -> Handler:
        for interceptor in reversed(self.interceptors):
            handler = interceptor.intercept(details, handler)
        return handler


def chained(interceptors: Sequence[grpc.aio.ServerInterceptor]) -> list[grpc.aio.ServerInterceptor]:
    """``interceptors`` in the same order, each run of method interceptors as one chain."""
    result: list[grpc.aio.ServerInterceptor] = []
    run: list[MethodInterceptor] = []
    for interceptor in interceptors:
        if isinstance(interceptor, MethodInterceptor):
            run.append(interceptor)
            continue
        if run:
            result.append(MethodChain(run))
            run = []
        result.append(interceptor)
    if run:
        result.append(MethodChain(run))
    return result


class PerMethod:
    """Wrapped handlers, built once per method and reused while gRPC hands the same handler."""

    __slots__ = ("_wrapped",)

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    def get(
        self, method: str, handler: Handler, build: Callable[..., Handler], *args: Any
    ) -> Handler:
        """The wrapper of ``method``'s ``handler``: ``build(handler, *args)`` on first use."""
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = build(handler, *args)
        self._wrapped[method] = (handler, wrapped)
        return wrapped


__all__ = [
    "After",
    "Behaviour",
    "Check",
    "Context",
    "Handler",
    "Metadata",
    "MethodChain",
    "MethodInterceptor",
    "PerMethod",
    "call_metadata",
    "chained",
    "checked",
    "produced_responses",
    "responses",
    "rewrap",
]
