"""Tracing, metrics and log correlation shared by every agentmesh service.

A service's entry point calls :func:`start_telemetry` once, after logging is
configured and before its server is built; :class:`TelemetryInterceptor` is
installed by the runtime's :class:`~agentmesh.runtime.GrpcServer` on every
server. See docs/observability.md for the variables and what each span and
metric means.
"""

from __future__ import annotations

from agentmesh.telemetry.client import client_span
from agentmesh.telemetry.exposition import MetricsServer, MetricsServerError, start_metrics_server
from agentmesh.telemetry.interceptor import TelemetryInterceptor
from agentmesh.telemetry.tracing import (
    TracingConfigError,
    configure_tracing,
    exporter_kind,
    shutdown_tracing,
    trace_log_fields,
    tracing_enabled,
)


def start_telemetry(service: str, *, host: str, metrics_port: int | None) -> MetricsServer | None:
    """Configure tracing from ``OTEL_*`` and serve metrics on ``metrics_port`` (None: no endpoint).

    Exits with a message naming the problem when either cannot be set up.
    """
    try:
        configure_tracing(service)
        if metrics_port is None:
            return None
        return start_metrics_server(host, metrics_port)
    except (TracingConfigError, MetricsServerError) as exc:
        raise SystemExit(f"agentmesh-{service}: {exc}") from None


__all__ = [
    "MetricsServer",
    "MetricsServerError",
    "TelemetryInterceptor",
    "TracingConfigError",
    "client_span",
    "configure_tracing",
    "exporter_kind",
    "shutdown_tracing",
    "start_metrics_server",
    "start_telemetry",
    "trace_log_fields",
    "tracing_enabled",
]
