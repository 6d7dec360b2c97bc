"""The OTLP sink of the traced gateway: ``python -m bench.receiver --port N``.

agentmesh's own trace receiver (:mod:`agentmesh.telemetry.collector`), kept in
memory and bounded, in a process of its own so that receiving spans does not
compete with the load generator; it answers ``grpc.health.v1`` so the runner
can wait for it like any service.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

from agentmesh.telemetry.collector import SpanStore, TraceReceiver


async def serve(host: str, port: int) -> None:
    server = grpc.aio.server()
    receiver = TraceReceiver(SpanStore(None, max_spans=10_000))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)  # type: ignore[no-untyped-call]
    checks = health.aio.HealthServicer()
    await checks.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise SystemExit(f"bench.receiver: cannot listen on {host}:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(1.0)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.receiver")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--grace-period", type=float, default=1.0, help="accepted, unused")
    args: Any = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
