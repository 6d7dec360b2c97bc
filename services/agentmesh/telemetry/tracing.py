"""The OpenTelemetry SDK, configured only by the standard ``OTEL_*`` variables.

Tracing is **on** when spans have somewhere to go:

* ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set, or
* ``OTEL_TRACES_EXPORTER`` is ``otlp`` (default endpoint ``localhost:4317``) or ``console``.

It is **off** when ``OTEL_SDK_DISABLED=true``, when ``OTEL_TRACES_EXPORTER=none``,
or when none of the above is set. Off means no SDK provider is installed: the
API stays a no-op, the server interceptor skips all span work and nothing is
exported.

Everything else is read by the SDK itself: ``OTEL_SERVICE_NAME`` and
``OTEL_RESOURCE_ATTRIBUTES`` (each service names itself when neither sets
``service.name``), ``OTEL_TRACES_SAMPLER``/``_ARG``, ``OTEL_EXPORTER_OTLP_PROTOCOL``
(``grpc`` or ``http/protobuf``), ``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_BSP_*``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from opentelemetry import trace

# The SDK is imported when tracing is turned on: a process that does not trace
# does not carry it (about 1.6 MB of an idle agent's memory).
if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger("agentmesh.telemetry")

SERVICE_NAMESPACE = "service.namespace"

_provider: TracerProvider | None = None


class TracingConfigError(ValueError):
    """An ``OTEL_*`` variable has a value this service cannot honour."""


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def exporter_kind(env: Mapping[str, str] | None = None) -> str | None:
    """``"otlp"`` or ``"console"`` when tracing is on for ``env``, ``None`` when off."""
    env = os.environ if env is None else env
    if _truthy(env.get("OTEL_SDK_DISABLED")):
        return None
    kind = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if kind == "none":
        return None
    if kind == "console":
        return "console"
    if kind not in ("", "otlp"):
        raise TracingConfigError(
            f"OTEL_TRACES_EXPORTER={kind!r} is not supported; use otlp, console or none"
        )
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    return "otlp" if endpoint or kind == "otlp" else None


def _otlp_exporter(env: Mapping[str, str]) -> SpanExporter:
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "grpc"
    ).strip()
    # OpenTelemetry's exporters, with agentmesh's encoder (agentmesh.telemetry.otlp).
    if protocol == "grpc":
        from agentmesh.telemetry.otlp import GrpcSpanExporter

        return GrpcSpanExporter()
    if protocol == "http/protobuf":
        from agentmesh.telemetry.otlp_http import HttpSpanExporter

        return HttpSpanExporter()
    raise TracingConfigError(
        f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported; use grpc or http/protobuf"
    )


def service_resource(service: str) -> Resource:
    """The resource from ``OTEL_*``, with ``service.name`` defaulting to ``service``."""
    from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource

    from_env = OTELResourceDetector().detect().attributes
    defaults: dict[str, str] = {}
    if not from_env.get(SERVICE_NAME):
        defaults[SERVICE_NAME] = service
    if not from_env.get(SERVICE_NAMESPACE):
        defaults[SERVICE_NAMESPACE] = "agentmesh"
    return Resource.create(defaults)


def configure_tracing(service: str, env: Mapping[str, str] | None = None) -> bool:
    """Install the SDK provider when tracing is on; returns whether it is.

    Call once at process start, before servers are built. Spans still queued
    are flushed at interpreter exit (after a graceful drain).
    Raises :class:`TracingConfigError` for values it cannot honour.
    """
    global _provider
    env = os.environ if env is None else env
    if _provider is not None:
        return True
    kind = exporter_kind(env)
    if kind is None:
        return False
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    exporter = ConsoleSpanExporter() if kind == "console" else _otlp_exporter(env)
    provider = TracerProvider(resource=service_resource(service))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    # Imported here: the runtime imports this package, not the other way round.
    from agentmesh.runtime.logs import add_context_hook

    add_context_hook(trace_log_fields)
    _provider = provider
    log.info("tracing on", extra={"exporter": kind})
    return True


def tracing_enabled() -> bool:
    """Whether :func:`configure_tracing` installed a provider in this process."""
    return _provider is not None


def shutdown_tracing() -> None:
    """Export what is queued and stop (idempotent; also runs at exit)."""
    if _provider is not None:
        _provider.shutdown()


def trace_log_fields() -> dict[str, str]:
    """``trace_id`` and ``span_id`` of the active span, for log records."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {
        "trace_id": trace.format_trace_id(context.trace_id),
        "span_id": trace.format_span_id(context.span_id),
    }
