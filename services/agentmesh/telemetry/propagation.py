"""W3C trace context in and out of gRPC metadata, for every call a service serves or makes.

:func:`extract` and :func:`inject` do what ``opentelemetry.propagate.extract``
and ``inject`` do with the globally configured propagators (``OTEL_PROPAGATORS``),
and take a shorter road when those are W3C's alone: ``tracecontext``, or
``tracecontext,baggage`` (the default). Extraction then reads the metadata once
for ``traceparent``, ``tracestate`` and ``baggage`` (instead of once per field,
through the generic getter) and, when none is there, returns the empty context
the propagators would; the headers found are handed to the configured
propagators themselves, so an invalid header is ignored, ``tracestate`` and
``baggage`` are kept, exactly as before. Injection formats ``traceparent`` and
``tracestate`` directly, and leaves ``baggage`` to its propagator when the
context has any. Any other configuration goes through OpenTelemetry unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from typing import Any

from opentelemetry import baggage, propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import Getter, TextMapPropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

# grpc.aio.Metadata, or a plain sequence of (key, value) pairs.
Metadata = Iterable[tuple[str, Any]]


class _MetadataGetter(Getter[Metadata]):
    """Reads propagation headers straight from gRPC's invocation metadata."""

    def get(self, carrier: Metadata, key: str) -> list[str] | None:
        values = [v for k, v in carrier if k == key and isinstance(v, str)]
        return values or None

    def keys(self, carrier: Metadata) -> list[str]:
        return [k for k, _ in carrier]


METADATA_GETTER = _MetadataGetter()


class _FoundGetter(Getter[dict[str, list[str]]]):
    """Reads the headers :func:`extract` collected (each name's values, in order)."""

    def get(self, carrier: dict[str, list[str]], key: str) -> list[str] | None:
        return carrier.get(key)

    def keys(self, carrier: dict[str, list[str]]) -> list[str]:
        return list(carrier)


_FOUND_GETTER = _FoundGetter()
_W3C_FIELDS = frozenset({"traceparent", "tracestate", "baggage"})
_EMPTY = Context()  # what the W3C propagators extract from metadata without their headers


class _W3C:
    """What the global propagator is: W3C's alone (and its baggage propagator, if any)."""

    __slots__ = ("baggage", "only", "textmap")

    def __init__(self, textmap: TextMapPropagator) -> None:
        self.textmap = textmap
        members: Any = (
            getattr(textmap, "_propagators", None)
            if type(textmap) is CompositePropagator
            else (textmap,)
        )
        kinds = [type(m) for m in members] if isinstance(members, list | tuple) else None
        self.only = kinds in (
            [TraceContextTextMapPropagator],
            [TraceContextTextMapPropagator, W3CBaggagePropagator],
        )
        with_baggage = self.only and len(members) > 1
        self.baggage: W3CBaggagePropagator | None = members[1] if with_baggage else None


_checked: _W3C | None = None


def _w3c(textmap: TextMapPropagator) -> _W3C:
    """What ``textmap`` is; asked once per global propagator."""
    global _checked
    if _checked is None or _checked.textmap is not textmap:
        _checked = _W3C(textmap)
    return _checked


def extract(metadata: Metadata) -> Context:
    """The caller's context in ``metadata``: ``propagate.extract(metadata)``, in one pass."""
    textmap = propagate.get_global_textmap()
    if not _w3c(textmap).only:
        return propagate.extract(metadata, getter=METADATA_GETTER)
    found: dict[str, list[str]] | None = None
    for key, value in metadata:
        if key in _W3C_FIELDS and isinstance(value, str):
            if found is None:
                found = {}
            values = found.get(key)
            if values is None:
                found[key] = [value]
            else:
                values.append(value)
    if found is None:
        return _EMPTY
    return textmap.extract(found, getter=_FOUND_GETTER)


def inject(carrier: MutableMapping[str, str], span: trace.Span | None = None) -> None:
    """``span``'s context (default: the current span's), and the current baggage, into
    ``carrier``: ``propagate.inject(carrier, context=trace.set_span_in_context(span))``."""
    textmap = propagate.get_global_textmap()
    w3c = _w3c(textmap)
    if not w3c.only:
        propagate.inject(carrier, context=None if span is None else trace.set_span_in_context(span))
        return
    context = (trace.get_current_span() if span is None else span).get_span_context()
    if context != trace.INVALID_SPAN_CONTEXT:
        carrier["traceparent"] = (
            f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
        )
        if context.trace_state:
            carrier["tracestate"] = context.trace_state.to_header()
    if w3c.baggage is not None and baggage.get_all():
        w3c.baggage.inject(carrier)
