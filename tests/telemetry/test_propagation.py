"""agentmesh's W3C propagation reads and writes what OpenTelemetry's propagators do.

Each case is compared with ``opentelemetry.propagate`` under the same global
propagator: the default (``tracecontext,baggage``), ``tracecontext`` alone, and
one that is not W3C's alone (which must go through OpenTelemetry unchanged).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import pytest
from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import (
    CarrierT,
    Getter,
    Setter,
    TextMapPropagator,
    default_getter,
    default_setter,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from agentmesh.telemetry import propagation
from agentmesh.telemetry.propagation import METADATA_GETTER

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
OTHER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
METADATA: dict[str, tuple[tuple[str, str], ...]] = {
    "nothing": (),
    "no trace headers": (("user-agent", "h2load"), ("x-api-key", "k")),
    "traceparent": (("user-agent", "h2load"), ("traceparent", PARENT)),
    "not sampled": (("traceparent", OTHER),),
    "tracestate": (("traceparent", PARENT), ("tracestate", "vendor=v,other=o")),
    "two tracestates": (
        ("tracestate", "a=1"),
        ("traceparent", PARENT),
        ("tracestate", "b=2"),
    ),
    "two traceparents": (("traceparent", PARENT), ("traceparent", OTHER)),
    "baggage": (("traceparent", PARENT), ("baggage", "user=alice,tier=gold;p=1")),
    "baggage only": (("baggage", "user=alice"),),
    "invalid traceparent": (("traceparent", "00-zzz-b7ad6b7169203331-01"),),
    "zero trace id": (("traceparent", "00-" + "0" * 32 + "-b7ad6b7169203331-01"),),
    "version ff": (("traceparent", "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),),
    "too long": (("traceparent", PARENT + "-" + "x" * 600),),
    "invalid tracestate": (("traceparent", PARENT), ("tracestate", "no equals sign")),
    "invalid baggage": (("baggage", "=;;"),),
    "binary value": (("traceparent", b"\x00"), ("traceparent", PARENT)),  # type: ignore[dict-item]
}


class _Named(TextMapPropagator):
    """A propagator that is not W3C's: its own header."""

    def extract(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        getter: Getter[CarrierT] = default_getter,
    ) -> Context:
        found = getter.get(carrier, "x-named")
        context = Context() if context is None else context
        return otel_context.set_value("named", found[0], context) if found else context

    def inject(
        self,
        carrier: CarrierT,
        context: Context | None = None,
        setter: Setter[CarrierT] = default_setter,
    ) -> None:
        setter.set(carrier, "x-named", "yes")

    @property
    def fields(self) -> set[str]:
        return {"x-named"}


TEXTMAPS: dict[str, Callable[[], TextMapPropagator]] = {
    "default": lambda: CompositePropagator(
        [TraceContextTextMapPropagator(), W3CBaggagePropagator()]
    ),
    "tracecontext": lambda: CompositePropagator([TraceContextTextMapPropagator()]),
    "tracecontext alone": TraceContextTextMapPropagator,
    "baggage first": lambda: CompositePropagator(
        [W3CBaggagePropagator(), TraceContextTextMapPropagator()]
    ),
    "with another": lambda: CompositePropagator([TraceContextTextMapPropagator(), _Named()]),
}


@pytest.fixture(params=list(TEXTMAPS))
def textmap(request: pytest.FixtureRequest) -> Iterator[str]:
    before = propagate.get_global_textmap()
    propagate.set_global_textmap(TEXTMAPS[request.param]())
    try:
        yield request.param
    finally:
        propagate.set_global_textmap(before)


def _seen(context: Context) -> tuple[object, ...]:
    span_context = trace.get_current_span(context).get_span_context()
    return (
        tuple(span_context),
        span_context.trace_state.to_header(),
        dict(baggage.get_all(context)),
        otel_context.get_value("named", context),
    )


@pytest.mark.parametrize("case", list(METADATA))
def test_extract_finds_what_opentelemetry_finds(textmap: str, case: str) -> None:
    metadata = METADATA[case]
    expected = propagate.extract(metadata, getter=METADATA_GETTER)
    got = propagation.extract(metadata)
    assert _seen(got) == _seen(expected)
    assert set(got) == set(expected)  # the same entries (spans compare by identity)


def test_the_default_propagators_take_the_short_road() -> None:
    assert propagation._w3c(propagate.get_global_textmap()).only
    assert not propagation._w3c(TEXTMAPS["with another"]()).only


SPANS = {
    "sampled": SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, False,
                           TraceFlags(1)),
    "not sampled": SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, False,
                               TraceFlags(0)),
    "trace state": SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True,
                               TraceFlags(3), TraceState([("vendor", "v"), ("k", "x")])),
    "invalid": trace.INVALID_SPAN_CONTEXT,
}  # fmt: skip
BAGGAGE: dict[str, Mapping[str, str]] = {"no baggage": {}, "baggage": {"user": "alice b"}}


@pytest.mark.parametrize("span", list(SPANS))
@pytest.mark.parametrize("entries", list(BAGGAGE))
@pytest.mark.parametrize("given", [True, False])
def test_inject_writes_what_opentelemetry_writes(
    textmap: str, span: str, entries: str, given: bool
) -> None:
    current = Context()
    for key, value in BAGGAGE[entries].items():
        current = baggage.set_baggage(key, value, current)
    the_span = NonRecordingSpan(SPANS[span])
    if not given:
        current = trace.set_span_in_context(the_span, current)
    token = otel_context.attach(current)
    try:
        expected: dict[str, str] = {}
        propagate.inject(expected, context=trace.set_span_in_context(the_span))
        got: dict[str, str] = {}
        propagation.inject(got, the_span if given else None)
    finally:
        otel_context.detach(token)
    assert list(got.items()) == list(expected.items())
