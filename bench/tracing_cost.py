"""What server-side telemetry costs on one Python gRPC hop.

Runs the same agent server (the runtime's ``AgentServicer`` over a trivial
echo agent) in a child process once per configuration, drives it from this
process with a bounded number of concurrent unary ``Invoke`` calls over
127.0.0.1, and reports requests per second and the ratio to the bare server
measured in the same run. Configurations run interleaved, ``--rounds`` times,
and the median of each is reported, so machine noise hits all of them alike.

Configurations:

* ``bare``: no interceptor.
* ``lean-off``: agentmesh's ``TelemetryInterceptor`` with tracing off (metrics only).
* ``lean-on``: the same with an SDK tracer (always sample, batch processor).
* ``contrib-on``: ``opentelemetry-instrumentation-grpc``'s aio server interceptor
  with the same SDK provider (install the ``bench`` extra).

Spans go to an exporter that drops them, so export transport is not measured,
but span creation, the batch processor and its queue are.

    python -m bench.tracing_cost --requests 4000 --concurrency 16 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

CONFIGS = ("bare", "lean-off", "lean-on", "contrib-on")


def _interceptors(config: str) -> list[Any]:
    """The server interceptors of ``config`` (built in the server process)."""
    if config == "bare":
        return []
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        SpanExporter,
        SpanExportResult,
    )

    from agentmesh.telemetry.interceptor import TelemetryInterceptor

    if config == "lean-off":
        return [TelemetryInterceptor(tracer=None)]

    class DropExporter(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DropExporter()))
    if config == "lean-on":
        return [TelemetryInterceptor(tracer=provider.get_tracer("bench"))]
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor(tracer_provider=provider)]  # type: ignore[no-untyped-call]


def _serve(config: str, ready: Any) -> None:  # pragma: no cover - child process
    import grpc

    from agentmesh.runtime import Request, Result, ServerSettings
    from agentmesh.runtime.agent import Agent
    from agentmesh.runtime.service import AgentServicer
    from agentmesh.runtime.types import AgentCard, Skill
    from agentmesh.v1 import agent_pb2_grpc

    class Echo(Agent):
        card = AgentCard(name="echo", description="echoes", skills=(Skill(id="echo"),))

        async def invoke(self, request: Request) -> Result:
            return Result.of(text=request.text)

    async def main() -> None:
        server = grpc.aio.server(interceptors=_interceptors(config))
        servicer = AgentServicer(Echo(), ServerSettings())
        agent_pb2_grpc.add_AgentServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        ready.send(port)
        await server.wait_for_termination()

    asyncio.run(main())


async def _drive(port: int, requests: int, concurrency: int) -> float:
    """Requests per second of ``requests`` calls, ``concurrency`` in flight at once."""
    import grpc

    from agentmesh.v1 import agent_pb2_grpc
    from agentmesh.v1 import messages_pb2 as pb

    request = pb.InvokeRequest(skill="echo", message=pb.Message(parts=[pb.Part(text="hello")]))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = agent_pb2_grpc.AgentStub(channel)
        for _ in range(200):  # warm-up: connection, caches, first-call paths
            await stub.Invoke(request, timeout=10)
        remaining = requests

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                await stub.Invoke(request, timeout=10)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return requests / (time.perf_counter() - started)


def measure(config: str, requests: int, concurrency: int) -> float:
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_serve, args=(config, send), daemon=True)
    process.start()
    try:
        if not receive.poll(60):
            raise RuntimeError(f"{config}: server did not start")
        port = int(receive.recv())
        return asyncio.run(_drive(port, requests, concurrency))
    finally:
        process.terminate()
        process.join(10)


def run(
    configs: Sequence[str], *, requests: int, concurrency: int, rounds: int
) -> dict[str, dict[str, float]]:
    """Median requests/s per configuration and its ratio to ``bare``."""
    samples: dict[str, list[float]] = {c: [] for c in configs}
    for _ in range(rounds):
        for config in configs:
            samples[config].append(measure(config, requests, concurrency))
    medians = {c: statistics.median(v) for c, v in samples.items()}
    base = medians.get("bare")
    return {
        c: {
            "rps": round(m, 1),
            "ratio_to_bare": round(m / base, 3) if base else float("nan"),
            "samples": [round(v, 1) for v in samples[c]],  # type: ignore[dict-item]
        }
        for c, m in medians.items()
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=4000, help="calls per measurement")
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight at once")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions")
    parser.add_argument(
        "--configs", default=",".join(CONFIGS), help=f"comma-separated subset of {CONFIGS}"
    )
    args = parser.parse_args(argv)
    configs = [c for c in args.configs.split(",") if c]
    unknown = set(configs) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown configs: {', '.join(sorted(unknown))}")
    results = run(configs, requests=args.requests, concurrency=args.concurrency, rounds=args.rounds)
    json.dump(
        {
            "python": sys.version.split()[0],
            "requests": args.requests,
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "results": results,
        },
        sys.stdout,
        indent=2,
    )
    print()


if __name__ == "__main__":
    main()
