"""The per-client rate limit as a gRPC server interceptor on the gateway's own service."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeAlias

import grpc

from agentmesh.gateway.resilience.ratelimit import RateLimiter
from agentmesh.telemetry.metrics import RATE_LIMITED

CLIENT_METADATA = "x-agentmesh-client"
RETRY_AFTER = "retry-after"
_MAX_CLIENT_CHARS = 128

Metadata = Sequence[tuple[str, str | bytes]] | None
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # generic only to the type checker


def client_identity(metadata: Metadata, peer: Callable[[], str]) -> str:
    """Who is calling, for rate limiting.

    The ``x-agentmesh-client`` metadata value when present, else the peer's
    host (the port is dropped: one machine is one client however many
    connections it opens). Authentication replaces this function with one
    returning the authenticated principal.
    """
    for key, value in metadata or ():
        if key == CLIENT_METADATA:
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
            return "client:" + text[:_MAX_CLIENT_CHARS]
    address = peer()  # "ipv4:127.0.0.1:5050", "ipv6:[::1]:5050", "unix:/path"
    kind, _, rest = address.partition(":")
    if kind in ("ipv4", "ipv6"):
        rest = rest.rpartition(":")[0] or rest
    return f"peer:{rest}"


class RateLimitInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls to ``service_prefix`` methods beyond the caller's rate.

    A refused call ends with RESOURCE_EXHAUSTED, a message saying when to
    retry, and the same figure in seconds as ``retry-after`` trailing metadata.
    """

    def __init__(
        self,
        limiter: RateLimiter,
        service_prefix: str = "/agentmesh.v1.Gateway/",
        *,
        authenticated: Callable[[], str | None] = lambda: None,
    ) -> None:
        """``authenticated`` returns the caller's authenticated identity, when known: it
        then replaces :func:`client_identity` (see agentmesh.gateway.auth)."""
        self._limiter = limiter
        self._prefix = service_prefix
        self._authenticated = authenticated

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None or not handler_call_details.method.startswith(self._prefix):
            return handler
        metadata: Metadata = handler_call_details.invocation_metadata
        principal = self._authenticated()
        if principal is not None:
            wait = self._limiter.check(principal)
            return handler if not wait else _wrap(handler, lambda _context: (principal, wait))
        if any(key == CLIENT_METADATA for key, _ in metadata or ()):
            # Identity known without the call's context: decide now, and pass
            # admitted calls to the servicer untouched.
            client = client_identity(metadata, lambda: "")
            wait = self._limiter.check(client)
            if not wait:
                return handler
            return _wrap(handler, lambda _context: (client, wait))

        def decide(context: grpc.aio.ServicerContext[Any, Any]) -> tuple[str, float]:
            client = client_identity(metadata, context.peer)
            return client, self._limiter.check(client)

        return _wrap(handler, decide)


Decide = Callable[[grpc.aio.ServicerContext[Any, Any]], tuple[str, float]]


async def _refuse(context: grpc.aio.ServicerContext[Any, Any], client: str, wait: float) -> None:
    RATE_LIMITED.labels(client=client).inc()
    await context.abort(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"rate limit exceeded for {client}; retry in {wait:.3f}s",
        trailing_metadata=((RETRY_AFTER, f"{wait:.3f}"),),
    )


def _wrap(handler: Handler, decide: Decide) -> Handler:
    serializers: dict[str, Any] = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        unary: Any = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            client, wait = decide(context)
            if wait:
                await _refuse(context, client, wait)
            return await unary(request, context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, **serializers)
    if handler.unary_stream is not None:
        streaming: Any = handler.unary_stream

        async def unary_stream(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            client, wait = decide(context)
            if wait:
                await _refuse(context, client, wait)
            produced = streaming(request, context)
            if inspect.isasyncgen(produced):
                async for item in produced:
                    yield item
            else:  # a handler that writes through the context
                await produced

        return grpc.unary_stream_rpc_method_handler(unary_stream, **serializers)
    return handler  # client- and bidi-streaming: the gateway serves none
