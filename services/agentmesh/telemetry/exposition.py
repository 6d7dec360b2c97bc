"""The Prometheus metrics endpoint of a service (``GET /metrics`` over HTTP).

prometheus-client serves it from a daemon thread, off the event loop, so a
scrape never delays an RPC.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server

log = logging.getLogger("agentmesh.telemetry")


class MetricsServerError(RuntimeError):
    """The metrics endpoint could not listen on its address."""


@dataclass(frozen=True, slots=True)
class MetricsServer:
    """A running metrics endpoint; ``port`` is the bound one (useful with port 0)."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_metrics_server(host: str, port: int) -> MetricsServer:
    """Serve every agentmesh metric at ``http://host:port/metrics``."""
    try:
        server, thread = start_http_server(port, addr=host)
    except OSError as exc:
        raise MetricsServerError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}"
        ) from None
    log.info("metrics endpoint", extra={"address": f"{host}:{server.server_port}"})
    return MetricsServer(server, thread)
