"""Scale: many open streams held by one gateway, a large registry, and jobs.

* :func:`open_streams`: ``count`` concurrent ``InvokeStream`` calls of the
  agent's ``hold`` skill through one gateway, each open end to end (its first
  partial output received); the gateway's resident memory before and while
  they are held gives memory per open stream, and unary calls made meanwhile
  give their p50 against the same calls with no stream held.
* :func:`registry`: a gateway whose registry declares ``agents`` names, spread
  over a handful of real agent processes (each name its own registry entry,
  channel, breaker and ``grpc.health.v1`` Watch); its resident memory and how
  long ``ListAgents`` takes.
* :func:`jobs`: submit-to-start latency (the gateway's own timestamps: the
  job's ``created_at`` and the ``updated_at`` of its WORKING state event) and
  jobs per second (submitted at once, until the last has finished).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
import yaml

from agentmesh.cli.runner import GATEWAY_MODULE, LocalMesh, ServiceSpec
from agentmesh.v1 import gateway_pb2, gateway_pb2_grpc
from agentmesh.v1 import messages_pb2 as pb
from bench.common import (
    AGENT_INVOKE,
    CALL_TIMEOUT,
    GATEWAY_INVOKE,
    GATEWAY_INVOKE_STREAM,
    HOST,
    PYTHON_GENERATOR,
    Metadata,
    drive,
    free_ports,
    invoke_request,
    percentile,
    raw_stream,
    rss_kib,
    socket_count,
)

STREAMS_PER_CHANNEL = 2500  # several connections, as many clients would open
TERMINAL = {pb.TASK_STATE_COMPLETED, pb.TASK_STATE_FAILED, pb.TASK_STATE_CANCELED}


# ------------------------------------------------------------------ open streams


@dataclass(frozen=True, slots=True)
class OpenStreamOptions:
    count: int = 10_000
    batch: int = 500  # opened at once
    unary_calls: int = 300  # measured before and while the streams are held
    hold_ms: float = 600_000


async def open_streams(
    address: str, agent: str, gateway_pid: int, agent_pid: int, options: OpenStreamOptions
) -> dict[str, Any]:
    """Hold ``options.count`` streams through the gateway at ``address``; see the module doc.

    Unary calls straight to the ``agent`` (which holds the same streams) are
    timed too, to tell the gateway's share of any slowdown from the agent's.
    """
    payload = invoke_request("bench", "hold", text="hold", ms=options.hold_ms)
    unary = invoke_request("bench", "echo")
    channel_count = max(1, math.ceil(options.count / STREAMS_PER_CHANNEL))
    # A channel argument of its own keeps each channel on its own connection.
    channels = [
        grpc.aio.insecure_channel(address, options=[("bench.channel", i)])
        for i in range(channel_count)
    ]
    calls: list[grpc.aio.UnaryStreamCall[bytes, bytes]] = []
    try:
        async with (
            grpc.aio.insecure_channel(address) as probe,
            grpc.aio.insecure_channel(agent) as direct,
        ):
            before = await drive(
                probe, GATEWAY_INVOKE, unary, requests=options.unary_calls, concurrency=1
            )
            direct_before = await drive(
                direct, AGENT_INVOKE, unary, requests=options.unary_calls, concurrency=1
            )
            await asyncio.sleep(0.5)
            rss_before = {"gateway": rss_kib(gateway_pid), "agent": rss_kib(agent_pid)}
            sockets_before = socket_count(gateway_pid)

            async def open_one(index: int) -> None:
                stream = raw_stream(channels[index % channel_count], GATEWAY_INVOKE_STREAM)
                call = stream(payload, timeout=options.hold_ms / 1000 + CALL_TIMEOUT)
                calls.append(call)
                first = await call.read()  # started
                second = await call.read()  # the first partial output: open end to end
                if not isinstance(first, bytes) or not isinstance(second, bytes):
                    raise RuntimeError(f"stream {index} ended before its first partial output")

            opening = time.perf_counter()
            for start in range(0, options.count, options.batch):
                await asyncio.gather(
                    *(open_one(i) for i in range(start, min(start + options.batch, options.count)))
                )
            opened_in = time.perf_counter() - opening
            await asyncio.sleep(0.5)
            rss_held = {"gateway": rss_kib(gateway_pid), "agent": rss_kib(agent_pid)}
            sockets_held = socket_count(gateway_pid)
            during = await drive(
                probe, GATEWAY_INVOKE, unary, requests=options.unary_calls, concurrency=1
            )
            direct_during = await drive(
                direct, AGENT_INVOKE, unary, requests=options.unary_calls, concurrency=1
            )
            still_open = sum(1 for c in calls if not c.done())
    finally:
        for call in calls:
            call.cancel()
        for channel in channels:
            await channel.close()
    per_stream = {
        name: round((rss_held[name] - rss_before[name]) * 1024 / options.count) for name in rss_held
    }
    return {
        "generator": PYTHON_GENERATOR,
        "streams": options.count,
        "still_open_when_measured": still_open,
        "client_channels": channel_count,
        "opened_in_s": round(opened_in, 2),
        "opened_per_s": round(options.count / opened_in, 1),
        "rss_kib_before": rss_before,
        "rss_kib_held": rss_held,
        "bytes_per_open_stream": per_stream,
        "gateway_sockets": {"before": sockets_before, "held": sockets_held},
        "unary_before": asdict(before),
        "unary_during": asdict(during),
        "direct_unary_before": asdict(direct_before),
        "direct_unary_during": asdict(direct_during),
    }


# ------------------------------------------------------------------ registry


@dataclass(frozen=True, slots=True)
class RegistryOptions:
    agents: int = 1000
    servers: int = 4  # real agent processes the names are spread over
    list_calls: int = 20


def fleet_config(names: int, addresses: Sequence[str]) -> dict[str, Any]:
    return {
        "agents": {
            f"fleet-{i:04d}": {"address": addresses[i % len(addresses)]} for i in range(names)
        }
    }


async def registry(
    options: RegistryOptions, workdir: Path, *, env: dict[str, str], plain_idle_kib: int
) -> dict[str, Any]:
    """Start the fleet and its gateway, measure, stop them; see the module doc."""
    ports = free_ports(options.servers + 1)
    agents = [
        ServiceSpec(f"fleet-agent-{i}", "bench.agent", HOST, port, env)
        for i, port in enumerate(ports[:-1])
    ]
    config = workdir / "fleet.yaml"
    config.write_text(yaml.safe_dump(fleet_config(options.agents, [a.address for a in agents])))
    gateway = ServiceSpec(
        "gateway-fleet", GATEWAY_MODULE, HOST, ports[-1], {**env, "AGENTMESH_CONFIG": str(config)}
    )
    logs = workdir / "logs"
    fleet = LocalMesh(agents, log_dir=logs, grace_period=1)
    front = LocalMesh([gateway], log_dir=logs, grace_period=1, startup_timeout=180)
    try:
        await fleet.start()
        began = time.perf_counter()
        await front.start()
        start_up = time.perf_counter() - began
        pid = front.running[0].process.pid
        async with grpc.aio.insecure_channel(gateway.address) as channel:
            stub: gateway_pb2_grpc.GatewayAsyncStub = gateway_pb2_grpc.GatewayStub(channel)
            serving, waited = await _until_all_serving(stub, options.agents)
            reply = await stub.Invoke(
                pb.InvokeRequest(
                    agent=f"fleet-{options.agents - 1:04d}",
                    skill="echo",
                    message=pb.Message(parts=[pb.Part(text="hello")]),
                ),
                timeout=CALL_TIMEOUT,
            )
            if reply.artifacts[0].parts[0].text != "hello":
                raise RuntimeError(f"fleet gateway: unexpected reply {reply}")
            latencies: list[float] = []
            size = 0
            for _ in range(options.list_calls):
                began = time.perf_counter()
                listed = await stub.ListAgents(gateway_pb2.ListAgentsRequest(), timeout=60)
                latencies.append(time.perf_counter() - began)
                size = listed.ByteSize()
            rss = rss_kib(pid)
            sockets = socket_count(pid)
    finally:
        await front.stop()
        await fleet.stop()
    return {
        "generator": PYTHON_GENERATOR,
        "agents": options.agents,
        "agent_processes": options.servers,
        "serving": serving,
        "all_serving_after_s": round(waited, 2),
        "gateway_start_to_serving_s": round(start_up, 2),
        "list_agents_p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
        "list_agents_p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "list_agents_bytes": size,
        "gateway_rss_mb": round(rss / 1024, 1),
        "plain_gateway_idle_rss_mb": round(plain_idle_kib / 1024, 1),
        "kib_per_agent": round((rss - plain_idle_kib) / options.agents, 1),
        "gateway_sockets": sockets,
    }


async def _until_all_serving(
    stub: gateway_pb2_grpc.GatewayAsyncStub, count: int
) -> tuple[int, float]:
    """(agents listed SERVING, seconds waited): until all are, or 60 s have passed."""
    began = time.perf_counter()
    serving = 0
    for _ in range(300):  # bounded: 300 times 0.2 s
        listed = await stub.ListAgents(gateway_pb2.ListAgentsRequest(), timeout=60)
        serving = sum(1 for a in listed.agents if a.status == gateway_pb2.AGENT_STATUS_SERVING)
        if serving >= count:
            break
        await asyncio.sleep(0.2)
    return serving, time.perf_counter() - began


# ------------------------------------------------------------------ jobs


@dataclass(frozen=True, slots=True)
class JobOptions:
    latency_jobs: int = 100  # one at a time
    throughput_jobs: int = 400  # submitted at once
    submitters: int = 16


def job_request() -> gateway_pb2.SubmitJobRequest:
    return gateway_pb2.SubmitJobRequest(
        invoke=pb.InvokeRequest(
            agent="bench", skill="echo", message=pb.Message(parts=[pb.Part(text="hello")])
        )
    )


async def _follow(
    stub: gateway_pb2_grpc.GatewayAsyncStub, job_id: str, metadata: Metadata
) -> tuple[float, gateway_pb2.Job]:
    """(the WORKING event's updated_at, the job as it ended), from the job's events.

    The watch is left as soon as the final state arrives (the stream itself
    may end a little later: that is not the job's time).
    """
    started = math.nan
    call = stub.WatchJob(
        gateway_pb2.WatchJobRequest(job_id=job_id), timeout=CALL_TIMEOUT, metadata=metadata or None
    )
    try:
        async for event in call:
            if event.WhichOneof("event") != "state":
                continue
            if event.state.state == pb.TASK_STATE_WORKING and math.isnan(started):
                started = event.state.updated_at
            if event.state.state in TERMINAL:
                return started, event.state
    finally:
        call.cancel()
    raise RuntimeError(f"job {job_id}: the watch ended before the job did")


async def jobs(address: str, options: JobOptions, metadata: Metadata = ()) -> dict[str, Any]:
    """Submit-to-start latency, then jobs per second, on the gateway at ``address``."""
    meta = metadata or None
    async with grpc.aio.insecure_channel(address) as channel:
        stub: gateway_pb2_grpc.GatewayAsyncStub = gateway_pb2_grpc.GatewayStub(channel)
        delays: list[float] = []
        round_trips: list[float] = []
        for _ in range(options.latency_jobs):
            began = time.perf_counter()
            job = await stub.SubmitJob(job_request(), timeout=CALL_TIMEOUT, metadata=meta)
            started, ended = await _follow(stub, job.job_id, metadata)
            round_trips.append(time.perf_counter() - began)
            if ended.state != pb.TASK_STATE_COMPLETED:
                raise RuntimeError(f"job {job.job_id} ended {ended.state}: {ended.message}")
            delays.append(started - job.created_at)

        submitted: list[gateway_pb2.Job] = []
        remaining = options.throughput_jobs

        async def submitter() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                submitted.append(
                    await stub.SubmitJob(job_request(), timeout=CALL_TIMEOUT, metadata=meta)
                )

        began = time.perf_counter()
        await asyncio.gather(*(submitter() for _ in range(options.submitters)))
        submit_seconds = time.perf_counter() - began
        ends = await asyncio.gather(*(_follow(stub, job.job_id, metadata) for job in submitted))
        client_seconds = time.perf_counter() - began
    completed = sum(1 for _, end in ends if end.state == pb.TASK_STATE_COMPLETED)
    first = min(job.created_at for job in submitted)
    last = max(end.updated_at for _, end in ends)
    return {
        "generator": PYTHON_GENERATOR,
        "submit_to_start_p50_ms": round(percentile(delays, 0.5) * 1000, 2),
        "submit_to_start_p99_ms": round(percentile(delays, 0.99) * 1000, 2),
        "submit_to_done_round_trip_p50_ms": round(percentile(round_trips, 0.5) * 1000, 2),
        "latency_jobs": options.latency_jobs,
        "throughput_jobs": options.throughput_jobs,
        "completed": completed,
        "jobs_per_s": round(len(submitted) / max(last - first, 1e-9), 1),
        "submits_per_s": round(len(submitted) / submit_seconds, 1),
        "client_seconds": round(client_seconds, 2),
    }
