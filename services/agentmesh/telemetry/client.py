"""Trace context for calls the Python client library makes to the gateway.

:func:`client_span` opens a CLIENT span for one call and returns the call's
metadata with the W3C ``traceparent`` (and ``tracestate``/``baggage``) of
that span added, so the gateway's SERVER span becomes its child. Without an
SDK provider in the calling process the span is a no-op, yet an active
context (for example one the application extracted from its own incoming
request) is still propagated.

The span is not made the current span: it only has to reach the gateway, and
the library's streaming calls are async generators whose consumer runs
between their messages (its own spans are no children of the call), and which
may be closed later from another task, where a context attached here could
not be detached.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import grpc
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

from agentmesh.telemetry.rpcstatus import code_of, set_rpc_status

_tracer = trace.get_tracer("agentmesh.client")


@contextlib.contextmanager
def client_span(
    method: str, metadata: Sequence[tuple[str, str]]
) -> Iterator[tuple[tuple[str, str], ...]]:
    """A CLIENT span named ``method`` (``agentmesh.v1.Gateway/Invoke``) around a call.

    Yields ``metadata`` plus the propagation headers. An error leaving the
    block (a ``grpc.RpcError``, or any exception with a ``code`` attribute
    holding a ``grpc.StatusCode``) sets the span's status; a cancellation
    (``CancelledError``, the stream closed early) ends it as CANCELLED, no error.
    """
    service, _, name = method.rpartition("/")
    span = _tracer.start_span(
        method,
        kind=SpanKind.CLIENT,
        attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
    )
    try:
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        try:
            yield (*metadata, *carrier.items())
        except BaseException as exc:
            set_rpc_status(span, code_of(exc), server=False)
            raise
        set_rpc_status(span, grpc.StatusCode.OK, server=False)
    finally:
        span.end()
