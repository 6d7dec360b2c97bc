"""Streaming: an agent streams N small partial outputs; what a hop does to them.

For each path (direct to the agent, the bare Python proxy, nginx, the
gateway) the agent's ``stream`` skill sends ``events`` text deltas of 16
characters as fast as it can, between its ``started`` and ``final`` events:

* the Python client opens one stream at a time and records the time to the
  first partial output (from the call's start) and the stream's partial
  outputs per second (``events`` over the whole call);
* h2load (when present) keeps ``concurrency`` streams in flight and counts
  whole streams per second; partial outputs per second is that times ``events``.

Paths run interleaved, ``rounds`` times, and the median is kept.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from agentmesh.v1 import messages_pb2 as pb
from bench import h2load
from bench.common import (
    CALL_TIMEOUT,
    PYTHON_GENERATOR,
    Route,
    invoke_request,
    percentile,
    raw_stream,
)

PARTIAL_TAG = 0x12  # InvokeEvent.partial: field 2, length-delimited
FINAL_TAG = 0x1A  # InvokeEvent.final: field 3


@dataclass(frozen=True, slots=True)
class StreamOptions:
    events: int = 100
    calls: int = 100  # Python client, one at a time
    concurrency: int = 16  # h2load
    seconds: float = 3.0
    requests: int = 0  # h2load count instead of seconds (tiny runs)
    rounds: int = 3


def request(events: int) -> bytes:
    return invoke_request("bench", "stream", text="go", events=events)


async def check(channel: grpc.aio.Channel, route: Route, events: int) -> int:
    """One stream, parsed: ``events`` partial outputs then a final; returns its framed bytes."""
    call = raw_stream(channel, route.invoke_stream)(
        request(events), timeout=CALL_TIMEOUT, metadata=route.metadata or None
    )
    kinds: list[str | None] = []
    size = 0
    async for message in call:
        size += len(message) + 5
        kinds.append(pb.InvokeEvent.FromString(message).WhichOneof("event"))
    expected = ["started", *["partial"] * events, "final"]
    if kinds != expected:
        summary = {k: kinds.count(k) for k in set(kinds)}
        raise RuntimeError(f"{route.address}: stream events {summary}, not {events} partials")
    return size


async def one_stream(
    channel: grpc.aio.Channel, route: Route, payload: bytes, events: int
) -> tuple[float, float]:
    """(seconds to the first partial output, partial outputs per second of the whole call)."""
    call = raw_stream(channel, route.invoke_stream)(
        payload, timeout=CALL_TIMEOUT, metadata=route.metadata or None
    )
    clock = time.perf_counter
    started = clock()
    first = 0.0
    partials = 0
    async for message in call:
        if message[0] == PARTIAL_TAG:
            partials += 1
            if partials == 1:
                first = clock() - started
    elapsed = clock() - started
    if partials != events:
        raise RuntimeError(f"{route.address}: {partials} partial outputs, not {events}")
    return first, events / elapsed


async def python_sample(
    channel: grpc.aio.Channel, route: Route, options: StreamOptions
) -> dict[str, Any]:
    payload = request(options.events)
    for _ in range(min(10, options.calls)):  # warm-up
        await one_stream(channel, route, payload, options.events)
    firsts: list[float] = []
    rates: list[float] = []
    for _ in range(options.calls):
        first, rate = await one_stream(channel, route, payload, options.events)
        firsts.append(first)
        rates.append(rate)
    return {
        "generator": PYTHON_GENERATOR,
        "streams": options.calls,
        "first_event_p50_ms": round(percentile(firsts, 0.5) * 1000, 3),
        "first_event_p99_ms": round(percentile(firsts, 0.99) * 1000, 3),
        "events_per_s_p50": round(percentile(rates, 0.5), 1),
    }


async def measure(
    routes: Mapping[str, Route],
    urls: Mapping[str, str],
    servers: Mapping[str, Mapping[str, int]],
    options: StreamOptions,
    *,
    h2load_path: str | None,
    workdir: Path,
) -> dict[str, Any]:
    """Every path in ``routes``: Python figures, and h2load's where ``h2load_path`` is set."""
    body = h2load.write_body(workdir / "stream-request.bin", request(options.events))
    load = h2load.Load(
        concurrency=options.concurrency,
        duration=options.seconds if not options.requests else 0.0,
        requests=options.requests,
        warm_up_requests=max(options.concurrency, 50 if not options.requests else 0),
    )
    channels = {p: grpc.aio.insecure_channel(r.address) for p, r in routes.items()}
    python: dict[str, list[dict[str, Any]]] = {p: [] for p in routes}
    native: dict[str, list[h2load.H2Result]] = {p: [] for p in routes}
    try:
        expected = {p: await check(channels[p], r, options.events) for p, r in routes.items()}
        for _ in range(options.rounds):
            for path, route in routes.items():
                python[path].append(await python_sample(channels[path], route, options))
            if h2load_path is None:
                continue
            for path, route in routes.items():
                native[path].append(
                    await h2load.run(
                        h2load_path,
                        urls[path],
                        body,
                        load,
                        expected_bytes=expected[path],
                        headers=route.metadata,
                        servers=servers[path],
                    )
                )
    finally:
        for channel in channels.values():
            await channel.close()
    report: dict[str, Any] = {
        "events_per_stream": options.events,
        "delta_chars": 16,
        "python": {p: _median_dicts(samples) for p, samples in python.items()},
    }
    if h2load_path is not None:
        report["h2load"] = {}
        for path, results in native.items():
            chosen = h2load.median_run(results)
            chosen["events_per_s"] = round(chosen["rps"] * options.events, 1)
            report["h2load"][path] = chosen
    return report


def _median_dicts(samples: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        key: statistics.median(s[key] for s in samples) if key != "generator" else value
        for key, value in samples[0].items()
    }
