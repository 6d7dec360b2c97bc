"""Throughput from a native load generator: h2load sending pre-framed gRPC requests.

h2load (nghttp2) speaks HTTP/2 but not gRPC, so the request body is framed
here once (the 5-byte gRPC length prefix, then the serialized protobuf) and
written to a file h2load sends for every request, with the two headers gRPC
servers require::

    h2load -D 4 -c 4 -m 16 -t 1 -d request.bin \\
        -H 'content-type: application/grpc' -H 'te: trailers' \\
        http://127.0.0.1:PORT/agentmesh.v1.Gateway/Invoke

h2load counts an HTTP 200 as a success, and a failed gRPC call is still an
HTTP 200 (its status travels in the trailers), so each run is checked by the
bytes it received: a gRPC error answers with no DATA, so every succeeded
request must have brought back at least the ``expected_bytes`` of a good
answer, measured beforehand with the Python client on the same path.

Concurrency ``c`` is ``min(c, 4)`` connections with ``c / connections``
concurrent streams each; h2load runs on one thread. Each run is a short
unmeasured warm-up (``-n``) then a timed one (``-D``); a tiny run is ``-n`` only.
"""

from __future__ import annotations

import asyncio
import re
import resource
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import cpu_seconds

GENERATOR = "h2load"
MAX_CONNECTIONS = 4
TOLERANCE = 0.005  # answers may differ by a byte or two (ids); a failed call brings none
GRPC_HEADERS = (("content-type", "application/grpc"), ("te", "trailers"))

_FINISHED = re.compile(r"^finished in ([\d.]+(?:us|ms|s)), ([\d.]+) req/s", re.MULTILINE)
_REQUESTS = re.compile(
    r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored",
    re.MULTILINE,
)
_DATA = re.compile(r"^traffic: .*\((\d+)\) data", re.MULTILINE)
_REQUEST_TIME = re.compile(r"^time for request:\s+(\S+)\s+(\S+)\s+(\S+)", re.MULTILINE)
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def grpc_frame(message: bytes) -> bytes:
    """One uncompressed gRPC message: flag byte, 4-byte big-endian length, the bytes."""
    return b"\0" + len(message).to_bytes(4, "big") + message


def write_body(path: Path, message: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(grpc_frame(message))
    return path


@dataclass(frozen=True, slots=True)
class Load:
    """How hard and how long: ``concurrency`` streams in flight, for a time or a count."""

    concurrency: int
    duration: float = 0.0  # seconds measured (0: use ``requests``)
    requests: int = 0
    warm_up_requests: int = 0

    @property
    def connections(self) -> int:
        return max(1, min(self.concurrency, MAX_CONNECTIONS))

    @property
    def streams(self) -> int:
        return max(1, self.concurrency // self.connections)


@dataclass(frozen=True, slots=True)
class H2Result:
    rps: float
    requests: int  # succeeded
    failed: int
    seconds: float
    mean_ms: float  # h2load's mean time per request (it reports no percentiles)
    data_bytes: int
    bytes_per_response: float
    expected_bytes: int
    valid: bool  # every succeeded request brought back a full answer
    connections: int
    streams_per_connection: int
    client_cpu_ms: float  # h2load's own CPU time
    server_cpu_us_per_request: dict[str, float]  # per process on the path
    generator: str = GENERATOR

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s)$", text)
    return float(match.group(1)) * _UNITS[match.group(2)] if match else float("nan")


def parse(output: str) -> dict[str, float]:
    """The figures of one h2load run's report."""
    finished, counts = _FINISHED.search(output), _REQUESTS.search(output)
    data = _DATA.search(output)
    if finished is None or counts is None or data is None:
        raise RuntimeError(f"h2load printed no report:\n{output[-1500:]}")
    request_time = _REQUEST_TIME.search(output)
    return {
        "seconds": _ms(finished.group(1)) / 1000,
        "rps": float(finished.group(2)),
        "succeeded": int(counts.group(4)),
        "failed": int(counts.group(5)) + int(counts.group(6)),
        "data_bytes": int(data.group(1)),
        "mean_ms": _ms(request_time.group(3)) if request_time else float("nan"),
    }


def command(
    h2load: str,
    url: str,
    body: Path,
    load: Load,
    *,
    headers: Sequence[tuple[str, str]] = (),
    requests: int | None = None,
) -> list[str]:
    argv = [h2load, "-t", "1", "-c", str(load.connections), "-m", str(load.streams)]
    if requests is not None:
        argv += ["-n", str(max(requests, load.connections))]
    elif load.duration:
        argv += ["-D", f"{load.duration:g}"]
    else:
        argv += ["-n", str(max(load.requests, load.connections))]
    argv += ["-d", str(body)]
    for name, value in (*GRPC_HEADERS, *headers):
        argv += ["-H", f"{name}: {value}"]
    return [*argv, url]


async def _run(argv: Sequence[str], timeout: float) -> str:
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        command_line = " ".join(argv)
        raise RuntimeError(f"h2load did not finish within {timeout:.0f}s: {command_line}") from None
    if process.returncode != 0:
        text = output.decode(errors="replace")
        raise RuntimeError(f"h2load exited with {process.returncode}: {text[-1500:]}")
    return output.decode(errors="replace")


async def run(
    h2load: str,
    url: str,
    body: Path,
    load: Load,
    *,
    expected_bytes: int,
    headers: Sequence[tuple[str, str]] = (),
    servers: Mapping[str, int] | None = None,
) -> H2Result:
    """Warm up, then one measured h2load run; CPU per request of each of ``servers`` (pid)."""
    if load.warm_up_requests:
        await _run(command(h2load, url, body, load, headers=headers,
                           requests=load.warm_up_requests), 120)  # fmt: skip
    servers = servers or {}
    cpu_before = {name: cpu_seconds(pid) for name, pid in servers.items()}
    own_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    output = await _run(command(h2load, url, body, load, headers=headers),
                        max(60.0, load.duration * 4 + 30))  # fmt: skip
    elapsed = time.monotonic() - started
    own_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    figures = parse(output)
    succeeded = int(figures["succeeded"])
    cpu = {
        name: round((cpu_seconds(pid) - cpu_before[name]) / max(succeeded, 1) * 1e6, 1)
        for name, pid in servers.items()
    }
    per_response = figures["data_bytes"] / succeeded if succeeded else 0.0
    client_cpu = (own_after.ru_utime + own_after.ru_stime) - (
        own_before.ru_utime + own_before.ru_stime
    )
    return H2Result(
        rps=round(figures["rps"], 1),
        requests=succeeded,
        failed=int(figures["failed"]),
        seconds=round(figures["seconds"] or elapsed, 3),
        mean_ms=round(figures["mean_ms"], 3),
        data_bytes=int(figures["data_bytes"]),
        bytes_per_response=round(per_response, 1),
        expected_bytes=expected_bytes,
        valid=succeeded > 0
        and figures["failed"] == 0
        and per_response >= expected_bytes * (1 - TOLERANCE),
        connections=load.connections,
        streams_per_connection=load.streams,
        client_cpu_ms=round(client_cpu * 1000, 1),
        server_cpu_us_per_request=cpu,
    )


def median_run(results: Sequence[H2Result]) -> dict[str, Any]:
    """The run with the median throughput, its other figures with it; valid if all were.

    ``rounds`` keeps every run's throughput and CPU in the order measured, so
    two paths measured in the same rounds can be compared round by round.
    """
    ordered = sorted(results, key=lambda r: r.rps)
    chosen = ordered[len(ordered) // 2]
    rounds = [
        {
            "rps": r.rps,
            "requests": r.requests,
            "client_cpu_ms": r.client_cpu_ms,
            "server_cpu_us_per_request": r.server_cpu_us_per_request,
        }
        for r in results
    ]
    return {
        **chosen.as_dict(),
        "valid": all(r.valid for r in results),
        "runs": len(results),
        "rounds": rounds,
    }
