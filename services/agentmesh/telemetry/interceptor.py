"""Server-side telemetry of every agentmesh gRPC server, as one lean interceptor.

For every RPC it records ``agentmesh_rpc_requests``, ``_duration_seconds`` and
``_in_flight`` (always), and, when tracing is on, a SERVER span that is the
current span while the handler runs, continuing the caller's W3C
``traceparent``/``tracestate`` from the metadata. Health checks and reflection
get metrics but no spans (probes would bury the traces); ``Agent/GetCard`` gets
a span only inside a caller's trace, so that the gateway's periodic card
refreshes start no traces of their own.

Span status follows :mod:`agentmesh.telemetry.rpcstatus` (the OpenTelemetry
gRPC conventions; CANCELLED is never an error) and every span carries
``rpc.grpc.status_code``. An error records an ``exception`` event with the
exception's type and the status message the caller got (already free of
secrets and paths), never the raw exception text or a stack trace; the log
line written under the same trace id has those.

Streaming responses are written with ``context.write()`` from one coroutine
rather than yielded to gRPC: gRPC drops a response generator that is suspended
at a ``yield`` when the call is cancelled, and the event loop closes it later
from another task, where the span's context can no longer be detached ("Failed
to detach context"). Here the handler's generator is driven and closed by the
call's own task, so a cancelled stream ends its span as CANCELLED, cleanly.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from agentmesh.telemetry import propagation
from agentmesh.telemetry.handlers import (
    Behaviour,
    Handler,
    MethodInterceptor,
    PerMethod,
    call_metadata,
    rewrap,
)
from agentmesh.telemetry.metrics import RPC_DURATION, RPC_IN_FLIGHT, RPC_REQUESTS
from agentmesh.telemetry.rpcstatus import set_rpc_status
from agentmesh.telemetry.tracing import tracing_enabled


class Tracing(enum.Enum):
    """Which calls of a method get a SERVER span (when tracing is on)."""

    ALWAYS = "always"
    NEVER = "never"  # probes: health checks, reflection
    IN_TRACE = "in-trace"  # only as part of a caller's trace: background discovery


_UNTRACED = ("/grpc.health.v1.", "/grpc.reflection.")
# Fetched by the gateway every card_refresh_interval from every replica:
# recorded when a traced request asks for it, not as a trace of its own.
_TRACED_IN_TRACE_ONLY = frozenset({"/agentmesh.v1.Agent/GetCard"})


def method_tracing(method: str) -> Tracing:
    """How calls to the full method name ``method`` are traced."""
    if method.startswith(_UNTRACED):
        return Tracing.NEVER
    if method in _TRACED_IN_TRACE_ONLY:
        return Tracing.IN_TRACE
    return Tracing.ALWAYS


Context = grpc.aio.ServicerContext[Any, Any]
Metadata = propagation.Metadata
METADATA_GETTER = propagation.METADATA_GETTER  # the caller's trace context, read from metadata


class _MethodMetrics:
    """The metric children of one method, resolved once (``labels()`` is not free)."""

    __slots__ = ("duration", "in_flight", "method", "requests", "service", "short_name")

    def __init__(self, full_method: str) -> None:
        self.method = full_method.lstrip("/")
        self.service, _, self.short_name = self.method.rpartition("/")
        self.duration = RPC_DURATION.labels(method=self.method)
        self.in_flight = RPC_IN_FLIGHT.labels(method=self.method)
        self.requests: dict[grpc.StatusCode, Any] = {}

    def count(self, code: grpc.StatusCode) -> None:
        child = self.requests.get(code)
        if child is None:
            child = self.requests[code] = RPC_REQUESTS.labels(method=self.method, code=code.name)
        child.inc()


class _Call:
    """One RPC being served."""

    __slots__ = ("metrics", "span", "started", "token")

    def __init__(
        self,
        metrics: _MethodMetrics,
        span: trace.Span | None,
        token: object | None,
    ) -> None:
        self.metrics = metrics
        self.span = span
        self.token = token
        self.started = time.perf_counter()


def _final_code(context: Context, error: BaseException | None) -> grpc.StatusCode:
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return grpc.StatusCode.CANCELLED
    code: grpc.StatusCode | None = context.code()
    if code is not None and isinstance(code, grpc.StatusCode):
        return code
    return grpc.StatusCode.OK if error is None else grpc.StatusCode.UNKNOWN


class TelemetryInterceptor(MethodInterceptor):
    """Metrics for every RPC; a SERVER span per RPC when tracing is on.

    Whether to trace is decided when the interceptor is built (after
    :func:`~agentmesh.telemetry.configure_tracing`); with tracing off the only
    per-call work is a few metric updates.
    """

    def __init__(self, *, tracer: trace.Tracer | None = None) -> None:
        if tracer is None and tracing_enabled():
            tracer = trace.get_tracer("agentmesh.server")
        self._tracer = tracer
        self._wrapped = PerMethod()

    def intercept(self, details: grpc.HandlerCallDetails, handler: Handler) -> Handler:
        method: str = details.method
        return self._wrapped.get(method, handler, self._wrap, method)

    # -- per call -------------------------------------------------------------

    def _begin(
        self,
        metrics: _MethodMetrics,
        context: Context,
        tracing: Tracing,
        attributes: Mapping[str, str],
    ) -> _Call:
        metrics.in_flight.inc()
        if tracing is Tracing.NEVER or self._tracer is None:
            return _Call(metrics, None, None)
        parent = propagation.extract(call_metadata(context))
        if (
            tracing is Tracing.IN_TRACE
            and not trace.get_current_span(parent).get_span_context().is_valid
        ):
            return _Call(metrics, None, None)
        span = self._tracer.start_span(
            metrics.method, context=parent, kind=SpanKind.SERVER, attributes=attributes
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        return _Call(metrics, span, token)

    def _end(self, call: _Call, context: Context, error: BaseException | None) -> None:
        code = _final_code(context, error)
        metrics = call.metrics
        metrics.in_flight.dec()
        metrics.duration.observe(time.perf_counter() - call.started)
        metrics.count(code)
        span = call.span
        if span is None:
            return
        message = ""
        if code is not grpc.StatusCode.OK and code is not grpc.StatusCode.CANCELLED:
            details = context.details() or ""
            message = details if isinstance(details, str) else ""
            if error is not None:
                # context.abort raises AbortError inside the servicer's except
                # block: the exception that caused it is its __context__.
                cause = error.__context__ if isinstance(error, grpc.aio.AbortError) else error
                span.add_event(
                    "exception",
                    {
                        "exception.type": type(cause or error).__qualname__,
                        "exception.message": message,
                    },
                )
        set_rpc_status(span, code, server=True, message=message)
        otel_context.detach(call.token)  # type: ignore[arg-type]
        span.end()

    # -- handler wrapping -----------------------------------------------------

    def _wrap(self, handler: Handler, method: str) -> Handler:
        """``handler`` measured (and traced); built once per method (see :class:`PerMethod`)."""
        begin, end = self._begin, self._end
        metrics = _MethodMetrics(method)
        tracing = method_tracing(method) if self._tracer is not None else Tracing.NEVER
        attributes = MappingProxyType(
            {"rpc.system": "grpc", "rpc.service": metrics.service, "rpc.method": metrics.short_name}
        )

        def unary_response(behaviour: Behaviour) -> Behaviour:
            async def serve(request: Any, context: Context) -> Any:
                call = begin(metrics, context, tracing, attributes)
                try:
                    response = behaviour(request, context)
                    if inspect.isawaitable(response):
                        response = await response
                except BaseException as exc:
                    end(call, context, exc)
                    raise
                end(call, context, None)
                return response

            return serve

        def stream_response(behaviour: Behaviour) -> Behaviour:
            if not inspect.isasyncgenfunction(behaviour):
                return unary_response(behaviour)  # writes with context.write()

            async def serve(request: Any, context: Context) -> None:
                # Written here, not yielded to gRPC: see the module's docstring.
                call = begin(metrics, context, tracing, attributes)
                responses = behaviour(request, context)
                try:
                    async for response in responses:
                        await context.write(response)
                except BaseException as exc:
                    try:
                        # Stopped at a write (the call was cancelled): the
                        # handler's own cleanup runs now, in this task.
                        await responses.aclose()
                    finally:
                        end(call, context, exc)
                    raise
                end(call, context, None)

            return serve

        return rewrap(handler, unary=unary_response, stream=stream_response)
