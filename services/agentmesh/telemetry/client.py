"""Trace context for calls the Python client library makes to the gateway.

:func:`client_span` opens a CLIENT span for one call and returns the call's
metadata with the W3C ``traceparent`` (and ``tracestate``/``baggage``) of
that span added, so the gateway's SERVER span becomes its child. Without an
SDK provider in the calling process the span is a no-op, yet an active
context (for example one the application extracted from its own incoming
request) is still propagated.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import grpc
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

_tracer = trace.get_tracer("agentmesh.client")


@contextlib.contextmanager
def client_span(
    method: str, metadata: Sequence[tuple[str, str]]
) -> Iterator[tuple[tuple[str, str], ...]]:
    """A CLIENT span named ``method`` (``agentmesh.v1.Gateway/Invoke``) around a call.

    Yields ``metadata`` plus the propagation headers. An error leaving the
    block (a ``grpc.RpcError``, or any exception with a ``code`` attribute
    holding a ``grpc.StatusCode``) sets the span's status.
    """
    service, _, name = method.rpartition("/")
    with _tracer.start_as_current_span(
        method,
        kind=SpanKind.CLIENT,
        attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        try:
            yield (*metadata, *carrier.items())
        except Exception as exc:
            code = _status_of(exc)
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            span.set_status(Status(StatusCode.ERROR, code.name))
            raise
        span.set_attribute("rpc.grpc.status_code", 0)


def _status_of(exc: Exception) -> grpc.StatusCode:
    """The gRPC code an error carries (``RpcError.code()`` or a ``code`` attribute)."""
    code = getattr(exc, "code", None)
    if callable(code):
        code = code()
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
