"""What the gateway adds in front of an external A2A agent, measured in one run.

Starts on 127.0.0.1 the a2a-sdk agent of the tests (``tests/a2a/external_agent.py``)
once per binding (gRPC and JSON-RPC), and a gateway declaring both, then
drives, with a bounded number of requests per measurement:

* ``direct``: the a2a-sdk client transport to the agent, doing what the
  gateway does for an ``Invoke`` (``SendStreamingMessage``, read to the end);
* ``gateway``: agentmesh's ``Invoke`` through the gateway to the same agent.

Both paths run interleaved, ``--rounds`` times, and the median of each is
kept, so noise on a shared machine hits both alike; the report gives the
gateway's p50 and throughput as ratios to the direct path's.

    python -m bench.a2a_hop --requests 300 --concurrency 1,16 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import grpc
import httpx
import yaml
from a2a.client.transports.base import ClientTransport
from a2a.client.transports.grpc import GrpcTransport
from a2a.client.transports.jsonrpc import JsonRpcTransport
from a2a.types import a2a_pb2 as a2a

from agentmesh.v1 import gateway_pb2_grpc
from agentmesh.v1 import messages_pb2 as pb
from bench.common import Sample, free_ports, timed
from bench.mesh import REPO_ROOT

AGENT_SCRIPT = REPO_ROOT / "tests" / "a2a" / "external_agent.py"
BINDINGS = ("grpc", "jsonrpc")
TEXT = "measure the hop"


async def _ready(check: Callable[[], Awaitable[bool]]) -> None:
    for _ in range(400):  # bounded: 20 s
        try:
            if await check():
                return
        except Exception:  # noqa: S110 - not up yet (refused, no card, ...): try again
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError("a benchmark service did not start")


def _direct_call(transport: ClientTransport) -> Callable[[], Awaitable[None]]:
    async def call() -> None:
        request = a2a.SendMessageRequest(
            message=a2a.Message(message_id="m", role=a2a.ROLE_USER, parts=[a2a.Part(text=TEXT)])
        )
        request.message.metadata.update({"skill": "shout"})
        async for _ in transport.send_message_streaming(request):
            pass

    return call


def _gateway_call(
    stub: gateway_pb2_grpc.GatewayAsyncStub, agent: str
) -> Callable[[], Awaitable[None]]:
    request = pb.InvokeRequest(
        agent=agent, skill="shout", message=pb.Message(parts=[pb.Part(text=TEXT)])
    )

    async def call() -> None:
        await stub.Invoke(request, timeout=30)

    return call


def measure(requests: int, concurrencies: Sequence[int], rounds: int) -> dict[str, Any]:
    """Start the agents and the gateway, measure, stop them (by PID) whatever happens."""
    ports = free_ports(3)
    agent_ports = dict(zip(BINDINGS, ports, strict=False))
    gateway_port = ports[2]
    addresses = {
        "grpc": f"127.0.0.1:{agent_ports['grpc']}",
        "jsonrpc": f"http://127.0.0.1:{agent_ports['jsonrpc']}/",
    }
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as workdir:
        config = Path(workdir) / "gateway.yaml"
        config.write_text(
            yaml.safe_dump(
                {"agents": {f"outsider-{b}": {"address": addresses[b], "a2a": b} for b in BINDINGS}}
            )
        )
        try:
            for binding in BINDINGS:
                processes.append(
                    subprocess.Popen(
                        [sys.executable, str(AGENT_SCRIPT), "--binding", binding,
                         "--port", str(agent_ports[binding])],
                        stdout=subprocess.DEVNULL,
                    )
                )  # fmt: skip
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "agentmesh.gateway", "--port", str(gateway_port),
                     "--config", str(config), "--log-level", "WARNING"],
                    stdout=subprocess.DEVNULL,
                )
            )  # fmt: skip
            return asyncio.run(
                _measure_running(
                    addresses, f"127.0.0.1:{gateway_port}", requests, concurrencies, rounds
                )
            )
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(timeout=30)


async def _measure_running(
    addresses: dict[str, str],
    gateway: str,
    requests: int,
    concurrencies: Sequence[int],
    rounds: int,
) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=max(concurrencies) * 2)
    async with (
        httpx.AsyncClient(timeout=30, limits=limits) as http,
        grpc.aio.insecure_channel(addresses["grpc"]) as agent_channel,
        grpc.aio.insecure_channel(gateway) as gateway_channel,
    ):
        direct: dict[str, ClientTransport] = {
            "grpc": GrpcTransport(agent_channel, None),
            "jsonrpc": JsonRpcTransport(
                http, a2a.AgentCard(), addresses["jsonrpc"], is_shared_httpx=True
            ),
        }
        http.headers["A2A-Version"] = "1.0"
        stub = gateway_pb2_grpc.GatewayStub(gateway_channel)
        calls = {
            (binding, path): (
                _direct_call(direct[binding])
                if path == "direct"
                else _gateway_call(stub, f"outsider-{binding}")
            )
            for binding in BINDINGS
            for path in ("direct", "gateway")
        }
        for call in calls.values():
            await _ready(lambda call=call: _ok(call))  # type: ignore[misc]
        samples: dict[tuple[str, str, int], list[Sample]] = {}
        for _ in range(rounds):
            for concurrency in concurrencies:
                for (binding, path), call in calls.items():
                    sample = await timed(
                        call, requests=requests, concurrency=concurrency, warm_up=50
                    )
                    samples.setdefault((binding, path, concurrency), []).append(sample)
    report: dict[str, Any] = {}
    for (binding, path, concurrency), runs in samples.items():
        median = Sample(
            requests=runs[0].requests,
            rps=statistics.median(r.rps for r in runs),
            p50_ms=statistics.median(r.p50_ms for r in runs),
            p99_ms=statistics.median(r.p99_ms for r in runs),
        )
        report.setdefault(binding, {}).setdefault(f"c{concurrency}", {})[path] = asdict(median)
    for binding in BINDINGS:
        for row in report[binding].values():
            row["p50_ratio"] = round(row["gateway"]["p50_ms"] / row["direct"]["p50_ms"], 2)
            row["throughput_ratio"] = round(row["gateway"]["rps"] / row["direct"]["rps"], 2)
    return report


async def _ok(call: Callable[[], Awaitable[None]]) -> bool:
    await call()
    return True


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    report = measure(args.requests, concurrencies, args.rounds)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
