"""Tracing switches, the metrics endpoint and the span store, in process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from meshtest import ProbeAgent, running_mesh
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from prometheus_client.parser import text_string_to_metric_families

from agentmesh.telemetry import TracingConfigError, exporter_kind, start_metrics_server
from agentmesh.telemetry.collector import SpanRecord, SpanStore, read_spans
from agentmesh.v1 import messages_pb2 as pb


@pytest.mark.parametrize(
    ("env", "kind"),
    [
        ({}, None),
        ({"OTEL_SERVICE_NAME": "x"}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4317"}, "otlp"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://jaeger:4318/v1/traces"}, "otlp"),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, "otlp"),
        ({"OTEL_TRACES_EXPORTER": "console"}, "console"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://j:4317", "OTEL_TRACES_EXPORTER": "none"}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://j:4317", "OTEL_SDK_DISABLED": "true"}, None),
    ],
)
def test_tracing_is_on_only_when_spans_have_somewhere_to_go(
    env: dict[str, str], kind: str | None
) -> None:
    assert exporter_kind(env) == kind


def test_an_unknown_exporter_is_named() -> None:
    with pytest.raises(TracingConfigError, match="OTEL_TRACES_EXPORTER='zipkin'"):
        exporter_kind({"OTEL_TRACES_EXPORTER": "zipkin"})


def _requests(scraped: str) -> dict[tuple[str, str], float]:
    return {
        (s.labels["method"], s.labels["code"]): s.value
        for family in text_string_to_metric_families(scraped)
        if family.name == "agentmesh_rpc_requests"
        for s in family.samples
        if s.name == "agentmesh_rpc_requests_total"
    }


async def test_the_metrics_endpoint_counts_calls_by_method_and_code() -> None:
    metrics = start_metrics_server("127.0.0.1", 0)
    url = f"http://127.0.0.1:{metrics.port}/metrics"
    try:
        async with httpx.AsyncClient() as http:
            before = _requests((await http.get(url)).text)
            async with running_mesh(ProbeAgent("metered")) as mesh:
                for _ in range(3):
                    await mesh.stub.Invoke(
                        pb.InvokeRequest(
                            agent="metered",
                            skill="echo",
                            message=pb.Message(parts=[pb.Part(text="hi")]),
                        )
                    )
                with pytest.raises(Exception, match=r"INVALID_ARGUMENT|NOT_FOUND"):
                    await mesh.stub.Invoke(pb.InvokeRequest(agent="metered", skill="nope"))
            scraped = (await http.get(url)).text
    finally:
        metrics.close()
    after = _requests(scraped)

    def delta(method: str, code: str) -> float:
        return after.get((method, code), 0.0) - before.get((method, code), 0.0)

    assert delta("agentmesh.v1.Gateway/Invoke", "OK") == 3
    assert delta("agentmesh.v1.Agent/Invoke", "OK") == 3
    assert (
        delta("agentmesh.v1.Gateway/Invoke", "OK")
        + sum(delta("agentmesh.v1.Gateway/Invoke", c) for c in ("INVALID_ARGUMENT", "NOT_FOUND"))
        == 4
    )
    assert "agentmesh_rpc_duration_seconds_bucket" in scraped
    assert 'agentmesh_rpc_in_flight{method="agentmesh.v1.Gateway/Invoke"} 0.0' in scraped


def _span(n: int) -> SpanRecord:
    return SpanRecord(f"{n:032x}", f"{n:016x}", "", "s", "SERVER", "svc", n, n + 1, "UNSET")


def test_the_span_file_stays_bounded_and_keeps_the_newest(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    store = SpanStore(path, max_spans=10)
    for n in range(1, 36):
        store.add([_span(n)])
    kept = read_spans(path)
    assert len(kept) <= 20
    assert kept[-1] == _span(35)
    assert [s.start_ns for s in store.spans()] == list(range(26, 36))
    assert [s.start_ns for s in SpanStore(path, max_spans=10).spans()] == list(range(26, 36))


def _export(*batches: range) -> trace_service_pb2.ExportTraceServiceRequest:
    """An export request: one resource, one scope per batch, one span per number."""
    resource = trace_pb2.ResourceSpans()
    resource.resource.attributes.add(key="service.name").value.string_value = "svc"
    for batch in batches:
        scope = resource.scope_spans.add()
        for n in batch:
            scope.spans.add(
                trace_id=n.to_bytes(16, "big"),
                span_id=n.to_bytes(8, "big"),
                name="s",
                kind=trace_pb2.Span.SPAN_KIND_SERVER,
                start_time_unix_nano=n,
                end_time_unix_nano=n + 1,
            )
    return trace_service_pb2.ExportTraceServiceRequest(resource_spans=[resource])


def test_a_memory_store_keeps_the_newest_received_spans_in_order() -> None:
    store = SpanStore(max_spans=10)
    store.receive(_export(range(1, 4), range(4, 6)))  # 5 spans in two scopes
    assert store.spans() == [_span(n) for n in range(1, 6)]
    assert store.spans() == [_span(n) for n in range(1, 6)]  # read twice: same spans
    store.receive(_export(range(6, 10)))
    store.receive(_export(range(10, 14)))  # 13 spans: the 3 oldest (already read) go
    store.add([_span(14)])
    store.receive(_export(range(15, 21)))
    assert [s.start_ns for s in store.spans()] == list(range(11, 21))
    store.receive(_export(range(21, 23)))
    store.receive(_export(range(23, 27)))
    # Past the bound by 11: the 6 read spans, the unread 21-22 whole, 23-25 of 23-26.
    store.receive(_export(range(27, 36)))
    assert [s.start_ns for s in store.spans()] == list(range(26, 36))


def test_the_sdk_is_loaded_only_by_a_process_that_traces() -> None:
    probe = (
        "import sys\n"
        "import agentmesh.runtime, agentmesh.telemetry\n"
        "before = 'opentelemetry.sdk.trace' in sys.modules\n"
        "agentmesh.telemetry.configure_tracing('probe', env={'OTEL_TRACES_EXPORTER': 'console'})\n"
        "print(before, 'opentelemetry.sdk.trace' in sys.modules)\n"
    )
    shown = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert shown.stdout.split() == ["False", "True"]
