"""How long a short job takes to be seen finished, through each way of waiting for it.

Starts on 127.0.0.1 the bench agent and a gateway (memory job store, and with
``--redis`` a real redis-server too), then, for a job whose agent call takes
``--ms`` milliseconds (5 by default), measures one after another:

* ``invoke``: the same call as a plain ``Invoke`` (the floor: no job at all);
* ``job``: ``SubmitJob``, then ``WatchJob`` from offset 0 to its last event;
* ``a2a``: a blocking A2A ``SendMessage`` (gRPC binding), answered when the task ends.

Watchers are woken by the job store as events are appended, so ``job`` and
``a2a`` should sit a few milliseconds above ``invoke``, not a polling period.

    python -m bench.job_watch --requests 200 [--redis]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
from a2a.client.transports.grpc import GrpcTransport
from a2a.types import a2a_pb2 as a2a
from google.protobuf import struct_pb2

from agentmesh.v1 import gateway_pb2, gateway_pb2_grpc
from agentmesh.v1 import messages_pb2 as pb
from bench.common import free_ports, percentile
from bench.mesh import REPO_ROOT


def _invoke(ms: float) -> pb.InvokeRequest:
    request = pb.InvokeRequest(agent="bench", skill="sleep")
    request.message.parts.add(text="job")
    request.options.update({"ms": ms})
    return request


async def _serving(address: str) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(400):  # bounded: 20 s
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{address} did not start")


@contextlib.contextmanager
def _processes(redis: bool, workdir: Path) -> Iterator[str]:
    """The agent, optionally redis-server, and the gateway; yields the gateway's address."""
    agent_port, gateway_port, redis_port = free_ports(3)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTMESH_", "OTEL_"))}
    env.update(
        AGENTMESH_LOG_LEVEL="WARNING",
        AGENTMESH_AGENT_BENCH_ADDRESSES=f"127.0.0.1:{agent_port}",
    )
    started: list[subprocess.Popen[bytes]] = []
    try:
        if redis:
            server = shutil.which("redis-server")
            if server is None:
                raise SystemExit("redis-server is not installed (Debian package redis-server)")
            started.append(
                subprocess.Popen(
                    [
                        server,
                        "--bind",
                        "127.0.0.1",
                        "--port",
                        str(redis_port),
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--dir",
                        str(workdir),
                    ],
                    stdout=subprocess.DEVNULL,
                )
            )
            env["AGENTMESH_REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
        started.append(
            subprocess.Popen(
                [sys.executable, "-m", "bench.agent", "--port", str(agent_port)],
                env=env,
                cwd=REPO_ROOT,
                stdout=subprocess.DEVNULL,
            )
        )
        started.append(
            subprocess.Popen(
                [sys.executable, "-m", "agentmesh.gateway", "--port", str(gateway_port)],
                env=env,
                cwd=REPO_ROOT,
                stdout=subprocess.DEVNULL,
            )
        )
        yield f"127.0.0.1:{gateway_port}"
    finally:
        for process in reversed(started):
            process.terminate()
        for process in started:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def _measure(address: str, requests: int, ms: float) -> dict[str, dict[str, float]]:
    await _serving(address)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        transport = GrpcTransport(channel, None)

        async def invoke() -> None:
            await stub.Invoke(_invoke(ms), timeout=10)

        async def job() -> None:
            submitted = await stub.SubmitJob(
                gateway_pb2.SubmitJobRequest(invoke=_invoke(ms)), timeout=10
            )
            request = gateway_pb2.WatchJobRequest(job_id=submitted.job_id)
            async for _ in stub.WatchJob(request, timeout=10):
                pass

        metadata = struct_pb2.Struct()
        metadata.update({"skill": "bench/sleep", "options": {"ms": ms}})

        async def send() -> None:
            message = a2a.Message(
                message_id=f"m{time.perf_counter_ns()}",
                role=a2a.ROLE_USER,
                parts=[a2a.Part(text="job")],
                metadata=metadata,
            )
            reply = await transport.send_message(a2a.SendMessageRequest(message=message))
            if reply.task.status.state != a2a.TASK_STATE_COMPLETED:
                raise RuntimeError(f"A2A task ended {reply.task.status.state}")

        paths: dict[str, Callable[[], Awaitable[None]]] = {
            "invoke": invoke,
            "job": job,
            "a2a": send,
        }
        for call in paths.values():  # warm channels and code paths
            for _ in range(5):
                await call()
        report: dict[str, dict[str, float]] = {}
        for name, call in paths.items():
            latencies = []
            for _ in range(requests):
                started = time.perf_counter()
                await call()
                latencies.append((time.perf_counter() - started) * 1000)
            report[name] = {
                "p50_ms": round(percentile(latencies, 0.5), 2),
                "p99_ms": round(percentile(latencies, 0.99), 2),
            }
        return report


def run(requests: int, ms: float, redis: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, _processes(redis, Path(tmp)) as address:
        paths = asyncio.run(_measure(address, requests, ms))
    floor = paths["invoke"]["p50_ms"]
    return {
        "store": "redis" if redis else "memory",
        "agent_ms": ms,
        "requests": requests,
        "generator": "python (sequential, one call at a time)",
        "paths": paths,
        "over_invoke_ms": {k: round(v["p50_ms"] - floor, 2) for k, v in paths.items()},
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.job_watch", description=__doc__)
    parser.add_argument("--requests", type=int, default=200, help="calls per path")
    parser.add_argument("--ms", type=float, default=5.0, help="the agent call's duration")
    parser.add_argument("--redis", action="store_true", help="jobs in a real redis-server")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.requests, args.ms, args.redis), indent=2))


if __name__ == "__main__":
    main()
