"""The per-client rate limit as a gRPC server interceptor on the gateway's own service."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable
from typing import Any

import grpc

from agentmesh.gateway.resilience.ratelimit import RateLimiter
from agentmesh.runtime.errors import Reason
from agentmesh.runtime.status import StatusDetails, abort_status
from agentmesh.telemetry.handlers import Handler, MethodInterceptor, PerMethod, checked
from agentmesh.telemetry.metrics import RATE_LIMITED

CLIENT_METADATA = "x-agentmesh-client"
_MAX_CLIENT_CHARS = 128

Metadata = Iterable[tuple[str, str | bytes]] | None

# (client, seconds to wait) of a call refused in intercept_service; None: decide in the call.
_refusal: contextvars.ContextVar[tuple[str, float] | None] = contextvars.ContextVar(
    "agentmesh_rate_refusal", default=None
)


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


class RateLimitInterceptor(MethodInterceptor):
    """Refuses calls to ``service_prefix`` methods beyond the caller's rate.

    A refused call ends with RESOURCE_EXHAUSTED, a message saying when to
    retry, and the rich details of :mod:`agentmesh.runtime.status`: ErrorInfo
    reason ``RATE_LIMITED`` and a RetryInfo delay (also sent as the
    ``retry-after`` trailer, in seconds).

    When the caller's identity is known from the call's metadata or its
    authentication, the decision is made here and an admitted call reaches the
    servicer untouched; otherwise (or to refuse) the method's wrapper, built
    once per method, decides or refuses in the call itself.
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
        self._wrapped = PerMethod()

    def intercept(self, details: grpc.HandlerCallDetails, handler: Handler) -> Handler:
        method: str = details.method
        if not method.startswith(self._prefix):
            return handler
        client = self._authenticated()
        if client is None:
            metadata: Metadata = details.invocation_metadata
            if any(key == CLIENT_METADATA for key, _ in metadata or ()):
                client = client_identity(metadata, lambda: "")
        if client is not None:
            # Identity known without the call's context: decide now, and pass
            # admitted calls to the servicer untouched.
            wait = self._limiter.check(client)
            if not wait:
                return handler
            _refusal.set((client, wait))
        else:
            _refusal.set(None)  # decided in the call, from its peer
        return self._wrapped.get(method, handler, checked, self._check)

    async def _check(self, request: object, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        refusal = _refusal.get()
        if refusal is None:
            client = client_identity(context.invocation_metadata(), context.peer)
            wait = self._limiter.check(client)
            if not wait:
                return
            refusal = (client, wait)
        client, wait = refusal
        RATE_LIMITED.labels(client=client).inc()
        await abort_status(
            context,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"rate limit exceeded for {client}; retry in {wait:.3f}s",
            StatusDetails(Reason.RATE_LIMITED, retry_after=wait),
        )
