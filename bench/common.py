"""What every benchmark section shares: the Python load driver, samples, /proc readings."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from agentmesh.runtime import ports
from agentmesh.v1 import messages_pb2 as pb

HOST = "127.0.0.1"
CALL_TIMEOUT = 30.0
AGENT_INVOKE = "/agentmesh.v1.Agent/Invoke"
AGENT_INVOKE_STREAM = "/agentmesh.v1.Agent/InvokeStream"
GATEWAY_INVOKE = "/agentmesh.v1.Gateway/Invoke"
GATEWAY_INVOKE_STREAM = "/agentmesh.v1.Gateway/InvokeStream"
GATEWAY_FANOUT = "/agentmesh.v1.Gateway/FanOut"
PYTHON_GENERATOR = "python"
"""Figures measured by this process's grpc.aio client (the ``generator`` of a sample)."""

Metadata = tuple[tuple[str, str], ...]
RawCall = grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]
RawStream = grpc.aio.UnaryStreamMultiCallable[bytes, bytes]


@dataclass(frozen=True, slots=True)
class Route:
    """Where a path's calls go: its address, the full method names and the caller's metadata."""

    address: str
    invoke: str
    invoke_stream: str
    metadata: Metadata = ()


@dataclass(frozen=True, slots=True)
class Sample:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    generator: str = PYTHON_GENERATOR


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile (``share`` from 0 to 1) of a non-empty sample."""
    ordered = sorted(values)
    rank = max(1, round(share * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


def summarize(latencies: Sequence[float], elapsed: float) -> Sample:
    return Sample(
        requests=len(latencies),
        rps=round(len(latencies) / elapsed, 1),
        p50_ms=round(percentile(latencies, 0.50) * 1000, 3),
        p99_ms=round(percentile(latencies, 0.99) * 1000, 3),
    )


def median_sample(samples: Sequence[Sample]) -> Sample:
    return Sample(
        requests=samples[0].requests,
        rps=round(statistics.median(s.rps for s in samples), 1),
        p50_ms=round(statistics.median(s.p50_ms for s in samples), 3),
        p99_ms=round(statistics.median(s.p99_ms for s in samples), 3),
        generator=samples[0].generator,
    )


def ratio(numerator: float, denominator: float) -> float:
    return round(numerator / denominator, 3) if denominator else float("nan")


def raw_call(channel: grpc.aio.Channel, method: str) -> RawCall:
    """``method`` with bytes in and bytes out (no serializers)."""
    call: RawCall = channel.unary_unary(method)
    return call


def raw_stream(channel: grpc.aio.Channel, method: str) -> RawStream:
    """Server-streaming ``method`` with bytes in and bytes out."""
    call: RawStream = channel.unary_stream(method)
    return call


def invoke_request(agent: str, skill: str, text: str = "hello", **options: float) -> bytes:
    request = pb.InvokeRequest(
        agent=agent, skill=skill, message=pb.Message(parts=[pb.Part(text=text)])
    )
    for key, value in options.items():
        request.options[key] = value
    return request.SerializeToString()


async def timed(
    call: Callable[[], Awaitable[None]], *, requests: int, concurrency: int, warm_up: int = 100
) -> Sample:
    """``requests`` awaits of ``call()``, ``concurrency`` at once, after ``warm_up`` unmeasured."""
    for _ in range(min(requests, warm_up)):  # connections, caches, first-call paths
        await call()
    latencies: list[float] = []
    remaining = requests
    clock = time.perf_counter

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = clock()
            await call()
            latencies.append(clock() - started)

    started = clock()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return summarize(latencies, clock() - started)


async def drive(
    channel: grpc.aio.Channel,
    method: str,
    payload: bytes,
    *,
    requests: int,
    concurrency: int,
    metadata: Metadata = (),
    warm_up: int = 100,
) -> Sample:
    """``requests`` calls of ``method`` with ``payload``, ``concurrency`` in flight at once.

    Requests and responses stay bytes, so the client's own cost is the same
    on every path and as small as grpc.aio allows.
    """
    call = raw_call(channel, method)
    meta = metadata or None

    async def once() -> None:
        await call(payload, timeout=CALL_TIMEOUT, metadata=meta)

    return await timed(once, requests=requests, concurrency=concurrency, warm_up=warm_up)


# ------------------------------------------------------------------ /proc


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` in MiB (Linux ``/proc``)."""
    return round(rss_kib(pid) / 1024, 1)


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` in KiB (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


_TICKS = os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (every thread's)."""
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text().split()
            found.extend(int(c) for c in text)
    except OSError:
        return []
    return found


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` and its live descendants (nginx's workers)."""
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        total += (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime
        pending.extend(children(current))
    return total


def socket_count(pid: int) -> int:
    """Open sockets of ``pid`` (its TCP connections and listeners, among others)."""
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd).startswith("socket:"):
                count += 1
        except OSError:
            continue
    return count


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def free_ports(count: int) -> list[int]:
    """Ports for the bench's processes to bind (outside the ephemeral range: see
    :mod:`agentmesh.runtime.ports`)."""
    return ports.free_ports(count, HOST)
