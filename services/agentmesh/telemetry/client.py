"""The CLIENT span of one gRPC call attempt, for every caller agentmesh has.

:class:`ClientSpan` opens a CLIENT span for one attempt (the gateway's calls to
agents, one per attempt, retries and hedges included) and gives the call's
metadata with the W3C ``traceparent`` (and ``tracestate``/``baggage``) of
that span added, so the server's SERVER span becomes its child.
:func:`client_span` is the same for the Python client library's calls to the
gateway. Without an SDK provider in the process and without an active span
nothing is started at all; an active context without a provider (one the
application extracted from its own incoming request) is still propagated.

The span is not made the current span: it only has to reach the server, and
streaming calls are async generators whose consumer runs between their
messages (its own spans are no children of the call), and which may be closed
later from another task, where a context attached here could not be detached.

Its status follows :mod:`agentmesh.telemetry.rpcstatus`: set once, by
:meth:`ClientSpan.finish` or, when the block did not, from the exception
leaving it (a ``grpc.RpcError``, anything with a ``code``; a cancellation ends
it as CANCELLED, no error) or OK.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType

import grpc
from opentelemetry import trace
from opentelemetry.environment_variables import OTEL_PYTHON_TRACER_PROVIDER
from opentelemetry.trace import SpanKind
from opentelemetry.util.types import AttributeValue

from agentmesh.telemetry import propagation
from agentmesh.telemetry.rpcstatus import code_of, set_rpc_status

_tracer = trace.get_tracer("agentmesh.client")

Metadata = tuple[tuple[str, str], ...]


# Whether OpenTelemetry would build its provider from the environment on first use.
_PROVIDER_FROM_ENV = OTEL_PYTHON_TRACER_PROVIDER in os.environ


def _tracing_off() -> bool:
    """No SDK provider installed: every span would be a no-op without a context.

    Reads OpenTelemetry's global provider rather than calling
    ``get_tracer_provider()``, which looks ``os.environ`` up on every call
    until a provider is set (a visible share of every call's cost in profiles
    of the gateway with tracing off).
    """
    if trace._TRACER_PROVIDER is not None:
        return False
    if _PROVIDER_FROM_ENV:
        return isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    return True


_sampling: tuple[object, bool] | None = None  # (provider, whether its sampler is parent-based)


def _parent_decides() -> bool:
    """Whether the installed provider samples a child as its parent was (``parentbased_*``,
    the default); asked once per provider."""
    global _sampling
    provider = trace._TRACER_PROVIDER
    if _sampling is None or _sampling[0] is not provider:
        from opentelemetry.sdk.trace.sampling import ParentBased  # only a tracing process asks

        _sampling = (provider, isinstance(getattr(provider, "sampler", None), ParentBased))
    return _sampling[1]


_RPC_ATTRIBUTES: dict[str, dict[str, str]] = {}  # per method: the span's rpc.* attributes


def _rpc_attributes(method: str) -> dict[str, str]:
    found = _RPC_ATTRIBUTES.get(method)
    if found is None:
        service, _, name = method.rpartition("/")
        found = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}
        if len(_RPC_ATTRIBUTES) < 1024:
            _RPC_ATTRIBUTES[method] = found
    return found


class ClientSpan:
    """A CLIENT span named ``method`` (``agentmesh.v1.Agent/Invoke``) around one attempt.

    In the block, ``span`` is the span (``INVALID_SPAN`` when nothing is
    traced) and ``metadata`` the given ``metadata`` plus the propagation
    headers. A subclass adds its own attributes with :meth:`attributes`,
    asked only for a span that records.
    """

    __slots__ = ("_done", "_method", "metadata", "span")

    def __init__(self, method: str, metadata: Sequence[tuple[str, str]] = ()) -> None:
        self._method = method
        self.metadata: Metadata = tuple(metadata)
        self.span: trace.Span = trace.INVALID_SPAN
        self._done = False

    def attributes(self) -> Mapping[str, AttributeValue] | None:
        """Attributes of the span beyond ``rpc.*`` (set as it starts); none here."""
        return None

    def __enter__(self) -> ClientSpan:
        parent = trace.get_current_span().get_span_context()
        if not parent.is_valid:
            if _tracing_off():
                self._done = True  # what the no-op tracer would give, for nothing
                return self
        elif not parent.trace_flags.sampled and _parent_decides():
            # A parent sampled out has children sampled out (parent-based sampling): no
            # span to start, but its context travels on so the server decides the same.
            headers: dict[str, str] = {}
            propagation.inject(headers)
            self.metadata += tuple(headers.items())
            self._done = True
            return self
        method = self._method
        attributes: Mapping[str, AttributeValue] = _rpc_attributes(method)
        more = self.attributes()
        if more:
            attributes = {**attributes, **more}
        span = self.span = _tracer.start_span(method, kind=SpanKind.CLIENT, attributes=attributes)
        carrier: dict[str, str] = {}
        propagation.inject(carrier, span)
        self.metadata += tuple(carrier.items())
        return self

    def finish(self, code: grpc.StatusCode) -> None:
        """Set the span's status for ``code`` (the first call wins)."""
        if not self._done:
            self._done = True
            set_rpc_status(self.span, code, server=False)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.finish(grpc.StatusCode.OK if exc is None else code_of(exc))
        self.span.end()


@contextlib.contextmanager
def client_span(method: str, metadata: Sequence[tuple[str, str]]) -> Iterator[Metadata]:
    """A :class:`ClientSpan` around a call of the Python client; yields the call's metadata."""
    with ClientSpan(method, metadata) as attempt:
        yield attempt.metadata
