"""A small OTLP/gRPC trace receiver that keeps recent spans in a bounded file.

``agentmesh up`` runs one and points every service at it, so that traces can
be looked at with ``agentmesh trace`` without Jaeger. It speaks the same
protocol Jaeger ingests on port 4317 (``opentelemetry.proto`` TraceService).

Spans are stored one JSON object per line (:class:`SpanRecord` fields); when
the file holds twice ``max_spans`` it is rewritten with the newest ``max_spans``.
A store without a file keeps the export requests as they arrived and flattens
them when read: receiving costs a count, not a Python object per span.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1 import trace_pb2

log = logging.getLogger("agentmesh.telemetry")

_KINDS = {
    trace_pb2.Span.SPAN_KIND_INTERNAL: "INTERNAL",
    trace_pb2.Span.SPAN_KIND_SERVER: "SERVER",
    trace_pb2.Span.SPAN_KIND_CLIENT: "CLIENT",
    trace_pb2.Span.SPAN_KIND_PRODUCER: "PRODUCER",
    trace_pb2.Span.SPAN_KIND_CONSUMER: "CONSUMER",
}
_STATUSES = {
    trace_pb2.Status.STATUS_CODE_UNSET: "UNSET",
    trace_pb2.Status.STATUS_CODE_OK: "OK",
    trace_pb2.Status.STATUS_CODE_ERROR: "ERROR",
}


@dataclass(frozen=True, slots=True)
class SpanEvent:
    name: str
    time_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SpanRecord:
    """One received span, flattened; ids are lower-case hex, ``parent_id`` "" for a root."""

    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: str
    service: str
    start_ns: int
    end_ns: int
    status: str
    status_message: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    events: tuple[SpanEvent, ...] = ()

    @property
    def duration_ns(self) -> int:
        return max(self.end_ns - self.start_ns, 0)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), default=str)

    @classmethod
    def from_json(cls, line: str) -> SpanRecord:
        raw = json.loads(line)
        raw["events"] = tuple(SpanEvent(**e) for e in raw.get("events", ()))
        return cls(**raw)


def any_value(value: AnyValue) -> Any:
    """An OTLP attribute value as plain JSON-able Python."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind)


def attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in pairs}


def spans_from_request(request: trace_service_pb2.ExportTraceServiceRequest) -> list[SpanRecord]:
    """Every span of an OTLP export request, tagged with its resource's ``service.name``."""
    records: list[SpanRecord] = []
    for resource_spans in request.resource_spans:
        service = str(attributes(resource_spans.resource.attributes).get("service.name", "unknown"))
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                records.append(
                    SpanRecord(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_id=span.parent_span_id.hex(),
                        name=span.name,
                        kind=_KINDS.get(span.kind, "UNSPECIFIED"),
                        service=service,
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        status=_STATUSES.get(span.status.code, "UNSET"),
                        status_message=span.status.message,
                        attributes=attributes(span.attributes),
                        events=tuple(
                            SpanEvent(e.name, e.time_unix_nano, attributes(e.attributes))
                            for e in span.events
                        ),
                    )
                )
    return records


class SpanStore:
    """Recent spans in memory and, when ``path`` is given, in a bounded JSON-lines file.

    Thread-safe; ``max_spans`` bounds both the memory and (within a factor of
    two) the file.
    """

    def __init__(self, path: Path | None = None, *, max_spans: int = 20_000) -> None:
        self.path = path
        self.max_spans = max_spans
        self._spans: list[SpanRecord] = []
        # Export requests received and not yet read (a store without a file), oldest
        # first, each with its span count; they are newer than every span in _spans.
        self._arrived: deque[tuple[trace_service_pb2.ExportTraceServiceRequest, int]] = deque()
        self._arrived_spans = 0
        self._lines_in_file = 0
        self._lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._spans = read_spans(path)[-max_spans:]
            self._rewrite()

    def receive(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        """Keep the spans of an OTLP export request (flattened when read, or now for a file)."""
        if self.path is not None:
            self.add(spans_from_request(request))
            return
        count = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        with self._lock:
            self._arrived.append((request, count))
            self._arrived_spans += count
            self._trim()

    def add(self, records: Sequence[SpanRecord]) -> None:
        with self._lock:
            self._flatten()
            self._spans.extend(records)
            self._trim()
            if self.path is not None:
                if self._lines_in_file + len(records) > 2 * self.max_spans:
                    self._rewrite()
                else:
                    with self.path.open("a", encoding="utf-8") as out:
                        out.writelines(r.to_json() + "\n" for r in records)
                    self._lines_in_file += len(records)

    def _flatten(self) -> None:
        while self._arrived:
            request, _ = self._arrived.popleft()
            self._spans.extend(spans_from_request(request))
        self._arrived_spans = 0
        if len(self._spans) > self.max_spans:
            del self._spans[: len(self._spans) - self.max_spans]

    def _trim(self) -> None:
        """Drop the oldest spans past ``max_spans``; unread requests go whole (flattening
        one to keep part of it would cost what not flattening saves), so up to one
        request's spans more may wait unread until :meth:`spans` trims exactly."""
        excess = len(self._spans) + self._arrived_spans - self.max_spans
        if excess <= 0:
            return
        del self._spans[: min(excess, len(self._spans))]
        while self._arrived and self._arrived_spans - self._arrived[0][1] >= self.max_spans:
            _, count = self._arrived.popleft()
            self._arrived_spans -= count

    def _rewrite(self) -> None:
        assert self.path is not None
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text("".join(r.to_json() + "\n" for r in self._spans), encoding="utf-8")
        temporary.replace(self.path)
        self._lines_in_file = len(self._spans)

    def spans(self) -> list[SpanRecord]:
        with self._lock:
            self._flatten()
            return list(self._spans)


def read_spans(path: Path) -> list[SpanRecord]:
    """The spans in a store file, oldest first (a torn last line is skipped)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    records: list[SpanRecord] = []
    for line in text.splitlines():
        try:
            records.append(SpanRecord.from_json(line))
        except (ValueError, TypeError, KeyError):
            continue
    return records


def traces(spans: Iterable[SpanRecord]) -> dict[str, list[SpanRecord]]:
    """Spans grouped by trace id, each group ordered by start time."""
    grouped: dict[str, list[SpanRecord]] = {}
    for span in spans:
        grouped.setdefault(span.trace_id, []).append(span)
    for group in grouped.values():
        group.sort(key=lambda s: s.start_ns)
    return grouped


class TraceReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """``opentelemetry.proto.collector.trace.v1.TraceService`` into a :class:`SpanStore`."""

    def __init__(self, store: SpanStore) -> None:
        self.store = store

    async def Export(
        self,
        request: trace_service_pb2.ExportTraceServiceRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.store.receive(request)
        return trace_service_pb2.ExportTraceServiceResponse()


async def start_receiver(
    store: SpanStore, host: str = "127.0.0.1", port: int = 0
) -> ReceiverHandle:
    """Serve OTLP/gRPC on ``host:port`` (0: a free port) until :meth:`ReceiverHandle.stop`."""
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceReceiver(store), server)  # type: ignore[no-untyped-call]
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise RuntimeError(f"cannot listen on {host}:{port} for OTLP")
    await server.start()
    return ReceiverHandle(server, f"{host}:{bound}")


@dataclass(frozen=True, slots=True)
class ReceiverHandle:
    server: grpc.aio.Server
    address: str

    @property
    def endpoint(self) -> str:
        """The value for ``OTEL_EXPORTER_OTLP_ENDPOINT``."""
        return f"http://{self.address}"

    async def stop(self) -> None:
        await self.server.stop(1.0)
