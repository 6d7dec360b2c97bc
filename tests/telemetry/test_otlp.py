"""agentmesh's OTLP span encoder sends what OpenTelemetry's would, through both exporters.

The spans are real SDK spans (a real TracerProvider, real limits, remote and
local parents, events, links, every attribute type); the reference is
OpenTelemetry's own ``encode_spans`` of the same batch.
"""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Iterator, Sequence

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import (
    encode_spans as opentelemetry_encode_spans,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AnyValue

from agentmesh.telemetry import otlp
from agentmesh.telemetry.collector import SpanStore, start_receiver
from agentmesh.telemetry.otlp import GrpcSpanExporter, encode_spans
from agentmesh.telemetry.otlp_http import HttpSpanExporter

# Every type an attribute may have, and the edges of each.
ATTRIBUTES: dict[str, AnyValue] = {
    "text": "grpc",
    "empty": "",
    "unicode": "naïve — 日本語 ✓",
    "yes": True,
    "no": False,
    "zero": 0,
    "one": 1,
    "negative": -42,
    "int64.max": 2**63 - 1,
    "int64.min": -(2**63),
    "too.big": 2**64,  # no int64: left out by both encoders
    "float": 3.25,
    "float.zero": 0.0,
    "float.negative.zero": -0.0,
    "float.inf": float("inf"),
    "float.whole": 1.0,
    "bytes": b"\x00\xffraw",
    "strings": ("a", "", "ü"),
    "bools": (True, False),
    "ints": (0, -1, 2**40),
    "floats": (0.5, -2.0),
    "empty.list": (),
    "mixed": ("a", 1, 2.5, True),
    "mapping": {"inner": "x", "n": 7, "deeper": {"list": (1, 2)}},
    "x" * 300: "a long key",
}


def _provider(
    exporter: InMemorySpanExporter, resource: Resource, **kwargs: object
) -> TracerProvider:
    provider = TracerProvider(resource=resource, **kwargs)  # type: ignore[arg-type]
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def varied_spans() -> tuple[ReadableSpan, ...]:
    exporter = InMemorySpanExporter()
    names = {"service.name": "gateway", "service.namespace": "agentmesh"}
    resource = Resource.create(names)
    main = _provider(exporter, resource)
    # Distinct resource objects equal to each other (two providers of one service), a
    # resource with a schema URL, and an empty one.
    twin = _provider(exporter, Resource.create(names))
    schema = _provider(exporter, Resource({"service.name": "other"}, schema_url="https://x/1.2"))
    bare = _provider(exporter, Resource({}))
    limited = _provider(
        exporter,
        resource,
        span_limits=SpanLimits(max_attributes=2, max_events=1, max_links=1, max_span_attributes=2),
    )
    server = main.get_tracer("agentmesh.server")
    scoped = main.get_tracer(
        "agentmesh.client", "1.2.3", schema_url="https://opentelemetry.io/schemas/1.21.0",
        attributes={"scope.attr": "s", "scope.n": 3},
    )  # fmt: skip

    remote = TraceContextTextMapPropagator().extract(
        {
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "tracestate": "vendor=value,other=x",
        }
    )
    with server.start_as_current_span(
        "agentmesh.v1.Gateway/Invoke", context=remote, kind=SpanKind.SERVER, attributes=ATTRIBUTES
    ) as root:
        root.add_event("exception", {"exception.type": "ValueError", "exception.message": "m"})
        root.add_event("no attributes")
        root.add_event("", {"n": 1}, timestamp=0)
        for kind in SpanKind:
            with scoped.start_as_current_span(f"child {kind.name}", kind=kind) as child:
                child.set_status(Status(StatusCode.OK))
        with scoped.start_as_current_span(
            "linked",
            links=[
                Link(root.get_span_context(), {"link.attr": "l", "n": 2}),
                Link(
                    SpanContext(
                        0x4BF92F3577B34DA6A3CE929D0E0E4736,
                        0x00F067AA0BA902B7,
                        is_remote=True,
                        trace_flags=TraceFlags(0),
                    )
                ),
            ],
        ) as linked:
            linked.set_status(Status(StatusCode.ERROR, "upstream failed: Ünavailable"))
        with twin.get_tracer("agentmesh.server").start_as_current_span("twin"):
            pass
        with bare.get_tracer("").start_as_current_span(""):
            pass
    with schema.get_tracer("agentmesh.server").start_span("root, other resource") as other:
        other.set_status(StatusCode.ERROR)
    with limited.get_tracer("limited").start_as_current_span(
        "over its limits",
        attributes={"a": 1, "b": 2, "c": 3},
        links=[Link(root.get_span_context()), Link(root.get_span_context())],
    ) as over:
        over.add_event("first")
        over.add_event("second")
    with server.start_as_current_span("after the others"):
        pass
    return exporter.get_finished_spans()


def assert_same_message(spans: Sequence[ReadableSpan], encoded: bytes) -> None:
    expected = opentelemetry_encode_spans(spans)
    got = ExportTraceServiceRequest.FromString(encoded)
    assert got == expected
    # Equal messages serialized alike: submessages present in one are present in the other.
    assert got.SerializeToString(deterministic=True) == expected.SerializeToString(
        deterministic=True
    )


def test_a_varied_batch_encodes_to_opentelemetrys_message() -> None:
    spans = varied_spans()
    assert len(spans) >= 12
    assert any(s.dropped_attributes and s.dropped_events and s.dropped_links for s in spans)
    assert len({id(s.resource) for s in spans}) > len({s.resource for s in spans})
    assert_same_message(spans, encode_spans(spans))


@pytest.mark.parametrize("size", [0, 1, 2, 7])
def test_every_slice_of_the_batch_encodes_alike(size: int) -> None:
    spans = varied_spans()
    for start in range(len(spans)):
        batch = spans[start : start + size]
        assert_same_message(batch, encode_spans(batch))


def test_the_same_pairs_encode_alike_batch_after_batch() -> None:
    # What the encoder keeps between batches (recurring pairs, names) changes nothing.
    spans = varied_spans()
    first = encode_spans(spans)
    assert encode_spans(spans) == first
    otlp._pairs.clear()
    otlp._names.clear()
    otlp._statuses.clear()
    assert encode_spans(spans) == first


def test_one_and_true_and_one_point_zero_are_three_values() -> None:
    # Equal in Python, three AnyValue kinds on the wire: kept apart, whatever comes first.
    exporter = InMemorySpanExporter()
    tracer = _provider(exporter, Resource({})).get_tracer("t")
    for value in (1, True, 1.0, -0.0, 0.0, 0, False):
        with tracer.start_as_current_span("s", attributes={"v": value}):
            pass
    spans = exporter.get_finished_spans()
    assert_same_message(spans, encode_spans(spans))


# -- the exporters ------------------------------------------------------------------------


class _Spy:
    def __init__(self) -> None:
        self.batches = 0

    def __call__(self, spans: Sequence[ReadableSpan]) -> bytes:
        self.batches += 1
        return encode_spans(spans)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> _Spy:
    found = _Spy()
    monkeypatch.setattr(otlp, "encode_spans", found)
    monkeypatch.setattr("agentmesh.telemetry.otlp_http.encode_spans", found)
    return found


async def test_the_grpc_exporter_sends_the_encoded_batch_to_a_receiver(spy: _Spy) -> None:
    # GrpcSpanExporter overrides OpenTelemetry's translation step: if the exporter stops
    # calling it, the batch goes out through OpenTelemetry's encoder and this test fails.
    assert "_translate_data" in vars(OTLPSpanExporter), (
        "OTLPSpanExporter no longer has _translate_data: GrpcSpanExporter's hook is gone"
    )
    spans = varied_spans()
    store = SpanStore()
    receiver = await start_receiver(store)
    exporter = GrpcSpanExporter(endpoint=receiver.address, insecure=True)
    try:
        result = await asyncio.to_thread(exporter.export, spans)
    finally:
        exporter.shutdown()
        await receiver.stop()
    assert result is SpanExportResult.SUCCESS
    assert spy.batches == 1, "GrpcSpanExporter exported without agentmesh's encoder"
    received = store.spans()
    assert sorted(s.span_id for s in received) == sorted(
        trace.format_span_id(s.context.span_id) for s in spans
    )


class _Sink(http.server.BaseHTTPRequestHandler):
    bodies: list[bytes]

    def do_POST(self) -> None:
        self.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def http_sink() -> Iterator[tuple[str, list[bytes]]]:
    bodies: list[bytes] = []
    handler = type("Sink", (_Sink,), {"bodies": bodies})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", bodies
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_the_http_exporter_posts_the_encoded_batch(
    spy: _Spy, http_sink: tuple[str, list[bytes]]
) -> None:
    endpoint, bodies = http_sink
    spans = varied_spans()
    exporter = HttpSpanExporter(endpoint=endpoint)
    try:
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()  # type: ignore[no-untyped-call]
    assert spy.batches == 1
    assert len(bodies) == 1
    assert_same_message(spans, bodies[0])


def test_the_http_exporter_refuses_a_batch_over_its_size_limit(
    spy: _Spy, http_sink: tuple[str, list[bytes]]
) -> None:
    endpoint, bodies = http_sink
    exporter = HttpSpanExporter(endpoint=endpoint, max_request_size=100)
    try:
        assert exporter.export(varied_spans()) is SpanExportResult.FAILURE
    finally:
        exporter.shutdown()  # type: ignore[no-untyped-call]
    assert bodies == []
