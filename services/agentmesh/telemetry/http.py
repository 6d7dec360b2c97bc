"""CLIENT spans for outgoing HTTP calls made with httpx (model providers).

:func:`traced_transport` wraps an httpx transport so that every request gets
a span (method, URL without its query, status code) and carries the W3C
``traceparent``. With tracing off it returns the transport unchanged. The span
ends when the response headers arrive; a streamed body is read after it.
"""

from __future__ import annotations

import httpx
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from agentmesh.telemetry.tracing import tracing_enabled

_tracer = trace.get_tracer("agentmesh.http")


class TracingTransport(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url.copy_with(query=None, fragment=None)
        with _tracer.start_as_current_span(
            request.method,
            kind=SpanKind.CLIENT,
            attributes={
                "http.request.method": request.method,
                "url.full": str(url),  # no query: some providers take keys there
                "server.address": request.url.host,
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            propagate.inject(request.headers)
            try:
                response = await self._inner.handle_async_request(request)
            except Exception as exc:
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                span.set_attribute("error.type", type(exc).__qualname__)
                raise
            span.set_attribute("http.response.status_code", response.status_code)
            if response.status_code >= 400:
                span.set_status(Status(StatusCode.ERROR, str(response.status_code)))
            return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def traced_transport(
    transport: httpx.AsyncBaseTransport | None, *, limits: httpx.Limits
) -> httpx.AsyncBaseTransport | None:
    """``transport`` (or httpx's default one with ``limits``) traced when tracing is on."""
    if not tracing_enabled():
        return transport
    return TracingTransport(transport or httpx.AsyncHTTPTransport(limits=limits))
