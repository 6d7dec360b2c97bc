"""OTLP span export with a fast encoder: the protobuf bytes OpenTelemetry's would send.

OpenTelemetry's ``encode_spans`` runs in Python on the batch span processor's
thread and competes with the service's event loop for the GIL. It groups the
spans of a batch in dicts keyed by ``Resource``, whose ``__hash__`` JSON-encodes
the resource's attributes for every span, and builds one protobuf object per
attribute through a generic chain of ``isinstance`` checks.

:func:`encode_spans` writes the same ``ExportTraceServiceRequest`` straight in
the protobuf wire format: spans are grouped by the identity of their resource
and instrumentation scope (and by equality, as OpenTelemetry does, when two
distinct objects are equal), each resource and scope is encoded once per
batch, and the encoded attributes and names that recur from span to span are
kept (bounded). Every OpenTelemetry attribute type is encoded (``str``,
``bool``, ``int``, ``float``, ``bytes``, sequences and mappings of them, nested);
an attribute that cannot be encoded is left out and logged, like
OpenTelemetry does. ``tests/telemetry/test_otlp.py`` checks, span for span,
that the bytes parse to the message OpenTelemetry's encoder builds.

:class:`GrpcSpanExporter` (here) and
:class:`~agentmesh.telemetry.otlp_http.HttpSpanExporter` are OpenTelemetry's
OTLP exporters (gRPC and HTTP/protobuf) with their encoding step replaced and
everything else (endpoint, headers, TLS, compression, timeouts, retries, the
exporter's own metrics) theirs.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind

log = logging.getLogger("agentmesh.telemetry.otlp")

# -- the wire format ---------------------------------------------------------------------

_BYTE = [bytes((i,)) for i in range(128)]
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_UINT64 = (1 << 64) - 1
_pack_double = struct.Struct("<Bd").pack  # tag and double, for AnyValue.double_value
_pack_fixed64 = struct.Struct("<BQ").pack  # tag and fixed64
_pack_ids = struct.Struct(">BBQQBBQ").pack  # trace_id (16 bytes) and span_id (8), tagged
_pack_parent = struct.Struct(">BBQ").pack
_pack_link_flags = struct.Struct("<BI").pack


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _BYTE[value]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _sized(body: bytes) -> bytes:
    """``body`` with its length in front (a length-delimited field's value)."""
    size = len(body)
    return (_BYTE[size] if size < 0x80 else _varint(size)) + body


# Span.kind (field 6) for each SpanKind, and Span.flags (field 16, fixed32): whether the
# parent is known to be remote, and whether it is (SpanFlags in trace.proto).
_KIND = {kind: b"\x30" + _BYTE[kind.value + 1] for kind in SpanKind}
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200
_FLAGS_LOCAL = b"\x85\x01" + struct.pack("<I", _HAS_IS_REMOTE)
_FLAGS_REMOTE = b"\x85\x01" + struct.pack("<I", _HAS_IS_REMOTE | _IS_REMOTE)

# What recurs from span to span (attribute pairs, names, statuses), encoded once.
# Bounded: emptied when full, so that values of high cardinality cost only their encoding.
_CACHE_LIMIT = 4096
_pairs: dict[tuple[str, object, type], bytes] = {}
_names: dict[str, bytes] = {}
_statuses: dict[tuple[int, str | None], bytes] = {}


def _string_field(tag: bytes, value: str) -> bytes:
    return tag + _sized(value.encode("utf-8")) if value else b""


def _any_value(value: Any) -> bytes:
    """An ``AnyValue`` message's bytes, as OpenTelemetry's ``_encode_value`` builds it.

    Raises for a value it cannot encode (the attribute is then left out).
    """
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return b"\x0a" + _sized(value.encode("utf-8"))
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ValueError(f"{value} is out of range for an int64 attribute")
        return b"\x18" + _varint(value & _UINT64)
    if isinstance(value, float):
        return _pack_double(0x21, value)
    if isinstance(value, bytes):
        return b"\x3a" + _sized(value)
    if isinstance(value, Sequence):
        return b"\x2a" + _sized(b"".join([b"\x0a" + _sized(_any_value(v)) for v in value]))
    if isinstance(value, Mapping):
        pairs = b"".join([b"\x0a" + _key_value(str(k), v) for k, v in value.items()])
        return b"\x32" + _sized(pairs)
    raise TypeError(f"invalid type {type(value).__name__} of value {value!r}")


def _key_value(key: str, value: Any) -> bytes:
    """A sized ``KeyValue`` (its length, then its bytes); kept when it may recur."""
    kind = type(value)
    if kind is str or kind is bool or kind is int:
        # The type is part of the key: 1, 1.0 and True are equal, and encoded differently.
        # (Floats are not kept: 0.0 and -0.0 are equal too.)
        cache_key = (key, value, kind)
        found = _pairs.get(cache_key)
        if found is None:
            if len(_pairs) >= _CACHE_LIMIT:
                _pairs.clear()
            found = _pairs[cache_key] = _sized(
                _string_field(b"\x0a", key) + b"\x12" + _sized(_any_value(value))
            )
        return found
    if not isinstance(key, str):
        raise TypeError(f"attribute key {key!r} is not a string")
    return _sized(_string_field(b"\x0a", key) + b"\x12" + _sized(_any_value(value)))


def _attributes(tag: bytes, attributes: Mapping[str, Any] | None) -> list[bytes]:
    """The repeated ``KeyValue`` field ``tag`` of ``attributes``; pairs that fail are left out."""
    if not attributes:
        return []
    out: list[bytes] = []
    for key, value in attributes.items():
        try:
            out.append(tag + _key_value(key, value))
        except Exception as exc:  # what OpenTelemetry's encoder does: log it, skip it
            log.warning("attribute %r left out of the exported span: %s", key, exc)
    return out


def _name(name: str) -> bytes:
    """``Span.name`` (field 5)."""
    found = _names.get(name)
    if found is None:
        if len(_names) >= _CACHE_LIMIT:
            _names.clear()
        found = _names[name] = _string_field(b"\x2a", name)
    return found


def _status(code: int, description: str | None) -> bytes:
    """``Span.status`` (field 15), always present, as OpenTelemetry sends it."""
    key = (code, description)
    found = _statuses.get(key)
    if found is None:
        if len(_statuses) >= _CACHE_LIMIT:
            _statuses.clear()
        body = _string_field(b"\x12", description or "")
        if code:
            body += b"\x18" + _varint(code)
        found = _statuses[key] = b"\x7a" + _sized(body)
    return found


def _flags(parent: SpanContext | None) -> bytes:
    return _FLAGS_REMOTE if parent and parent.is_remote else _FLAGS_LOCAL


def _trace_state(tag: bytes, context: SpanContext) -> bytes:
    state = context.trace_state
    if not state:
        return b""
    return _string_field(tag, ",".join([f"{k}={v}" for k, v in state.items()]))


def _span(span: ReadableSpan) -> bytes:
    """One ``Span`` message, sized and tagged as ``ScopeSpans.spans`` (field 2)."""
    context = span.context
    trace_id = context.trace_id
    parts = [
        _pack_ids(0x0A, 16, trace_id >> 64, trace_id & _UINT64, 0x12, 8, context.span_id),
        _trace_state(b"\x1a", context),
    ]
    parent = span.parent
    if parent:
        parts.append(_pack_parent(0x22, 8, parent.span_id))
    parts.append(_name(span.name))
    parts.append(_KIND[span.kind])
    start, end = span.start_time, span.end_time
    if start:
        parts.append(_pack_fixed64(0x39, start))
    if end:
        parts.append(_pack_fixed64(0x41, end))
    parts += _attributes(b"\x4a", span.attributes)
    dropped = span.dropped_attributes
    if dropped:
        parts.append(b"\x50" + _varint(dropped))
    events = span.events
    if events:
        parts += [b"\x5a" + _sized(_event(event)) for event in events]
    dropped = span.dropped_events
    if dropped:
        parts.append(b"\x60" + _varint(dropped))
    links = span.links
    if links:
        parts += [b"\x6a" + _sized(_link(link)) for link in links]
    dropped = span.dropped_links
    if dropped:
        parts.append(b"\x70" + _varint(dropped))
    status = span.status
    if status is not None:
        parts.append(_status(status.status_code.value, status.description))
    parts.append(_flags(parent))
    return b"\x12" + _sized(b"".join(parts))


def _event(event: Any) -> bytes:
    parts = [_pack_fixed64(0x09, event.timestamp) if event.timestamp else b""]
    parts.append(_string_field(b"\x12", event.name))
    parts += _attributes(b"\x1a", event.attributes)
    if event.dropped_attributes:
        parts.append(b"\x20" + _varint(event.dropped_attributes))
    return b"".join(parts)


def _link(link: Any) -> bytes:
    # OpenTelemetry's encoder sends no trace_state for links: neither does this one.
    context = link.context
    trace_id = context.trace_id
    parts = [_pack_ids(0x0A, 16, trace_id >> 64, trace_id & _UINT64, 0x12, 8, context.span_id)]
    parts += _attributes(b"\x22", link.attributes)
    if link.dropped_attributes:
        parts.append(b"\x28" + _varint(link.dropped_attributes))
    flags = _HAS_IS_REMOTE | (_IS_REMOTE if context.is_remote else 0)
    parts.append(_pack_link_flags(0x35, flags))
    return b"".join(parts)


def _resource(resource: Resource) -> bytes:
    """``ResourceSpans.resource`` (field 1), always present."""
    return b"\x0a" + _sized(b"".join(_attributes(b"\x0a", resource.attributes)))


def _scope(scope: InstrumentationScope | None) -> bytes:
    """``ScopeSpans.scope`` (field 1), always present (empty without a scope)."""
    if scope is None:
        return b"\x0a\x00"
    body = [_string_field(b"\x0a", scope.name), _string_field(b"\x12", scope.version or "")]
    body += _attributes(b"\x1a", scope.attributes)
    return b"\x0a" + _sized(b"".join(body))


class _Group:
    """The spans of one resource (or one scope), in the order they came."""

    __slots__ = ("key", "members", "members_by_id", "members_by_value", "spans")

    def __init__(self, key: Any) -> None:
        self.key = key
        self.spans: list[bytes] = []
        self.members: list[_Group] = []
        self.members_by_id: dict[int, _Group] = {}
        self.members_by_value: dict[Any, _Group] = {}

    def member(self, key: Any) -> _Group:
        """The group of ``key``: by identity first; by equality (and hash, like a dict
        keyed by it) for an object not seen before in this batch."""
        found = self.members_by_id.get(id(key))
        if found is None:
            found = self.members_by_value.get(key)
            if found is None:
                found = self.members_by_value[key] = _Group(key)
                self.members.append(found)
            self.members_by_id[id(key)] = found
        return found


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """The serialized ``ExportTraceServiceRequest`` of ``spans``.

    The same message as OpenTelemetry's ``encode_spans(spans)``: spans grouped
    by resource, then by instrumentation scope, in the order each first
    appears.
    """
    batch = _Group(None)
    for span in spans:
        batch.member(span.resource).member(span.instrumentation_scope or None).spans.append(
            _span(span)
        )
    out: list[bytes] = []
    for by_resource in batch.members:
        resource: Resource = by_resource.key
        body = [_resource(resource)]
        for by_scope in by_resource.members:
            scope: InstrumentationScope | None = by_scope.key
            scope_spans = [_scope(scope), *by_scope.spans]
            if scope is not None:
                scope_spans.append(_string_field(b"\x1a", scope.schema_url or ""))
            body.append(b"\x12" + _sized(b"".join(scope_spans)))
        body.append(_string_field(b"\x1a", resource.schema_url))
        out.append(b"\x0a" + _sized(b"".join(body)))
    return b"".join(out)


# -- the exporters -----------------------------------------------------------------------


class GrpcSpanExporter(OTLPSpanExporter):
    """OpenTelemetry's OTLP/gRPC span exporter, encoding with :func:`encode_spans`.

    Overrides the exporter's translation step (``_translate_data``, the one
    place it builds the request); ``tests/telemetry/test_otlp.py`` fails if that
    hook is gone or no longer used.
    """

    def _translate_data(self, data: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
        return ExportTraceServiceRequest.FromString(encode_spans(data))
