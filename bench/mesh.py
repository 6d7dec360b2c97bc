"""The gateway measured against native and Python floors, at production settings, in one run.

``python -m bench`` (or ``make bench``) starts real processes on 127.0.0.1:

* ``agent``: :mod:`bench.agent` (``echo``, ``sleep``, ``stream``, ``hold``);
* the floors in front of it: ``baseline``, :mod:`bench.proxy`, a bare
  ``grpc.aio`` pass-through (one Python hop), and ``nginx``, ``grpc_pass`` in
  one nginx worker (one hop done in C; :mod:`bench.native`);
* gateways in front of it, one process per setting: ``gateway`` (defaults:
  tracing off, no auth, in-memory breakers), ``gateway-auth`` (API-key auth
  and a per-key rate limit high enough to refuse nothing), ``gateway-redis``
  (breaker state shared through a redis-server the bench starts),
  ``gateway-prod`` (all three), ``gateway-traced`` and ``gateway-traced-10``
  (100 % and 10 % of requests traced, spans exported over OTLP to
  :mod:`bench.receiver`), ``gateway-uvloop`` (with the ``bench`` extra);

and reports, in one run:

* ``unary``: every path at each concurrency: throughput from h2load
  (:mod:`bench.h2load`, pre-framed gRPC requests; with each hop's CPU time per
  request from /proc) and latency percentiles from the Python client; every
  path against direct, the bare Python proxy and nginx;
* ``fanout``, ``fast_fail``: FanOut of 1 to 16 legs of 50 ms; calls to an agent
  whose breaker is open (on the plain and the production-settings gateway), and
  the same sequential calls answered by the agent directly (the client's floor);
* ``streaming``: :mod:`bench.streaming` (time to first event, events per second);
* ``jobs``, ``open_streams``, ``registry``: :mod:`bench.scale`;
* ``profile``: :mod:`bench.profile` of the gateway and of the bare proxy under
  h2load at concurrency 64;
* ``memory``, ``interceptor`` (:mod:`bench.tracing_cost`), ``targets``.

Every figure names the generator that produced it (``h2load`` or
``python``). A tool that is missing (h2load, nginx, redis-server, py-spy) is
installed with apt-get when running as root (``make bench``), else its part is
skipped and the reason recorded under ``skipped``. Paths are measured
interleaved, ``--rounds`` times, and the median kept (a target comparing two
paths: the median of their per-round ratios); the machine's load
average is recorded before and after. Output: ``latest.json``, ``latest.md``
and plots in ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import yaml
from google.protobuf.internal import api_implementation

from agentmesh.cli.runner import GATEWAY_MODULE, LocalMesh, ServiceSpec
from agentmesh.gateway.auth import hash_key, new_key
from agentmesh.v1 import gateway_pb2
from agentmesh.v1 import messages_pb2 as pb
from bench import h2load, native, profile, report, scale, streaming, tracing_cost
from bench.common import (
    AGENT_INVOKE,
    AGENT_INVOKE_STREAM,
    CALL_TIMEOUT,
    GATEWAY_FANOUT,
    GATEWAY_INVOKE,
    GATEWAY_INVOKE_STREAM,
    HOST,
    Route,
    Sample,
    drive,
    free_ports,
    invoke_request,
    load_average,
    median_sample,
    raw_call,
    rss_kib,
    rss_mb,
    summarize,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
LEG_MS = 50.0
PARSED = "parsed-proxy"
FLOORS = ("direct", "baseline", "nginx")
STREAM_PATHS = ("direct", "baseline", PARSED, "nginx", "gateway")
PROFILED = ("gateway", "baseline")
RATE_LIMIT = 1_000_000.0  # per second and burst: on, but never refusing the bench


@dataclass(frozen=True, slots=True)
class Variant:
    """One gateway process and the settings it runs with."""

    name: str
    what: str
    auth: bool = False
    redis_db: int | None = None
    sampling: float | None = None  # share of requests traced; None: tracing off
    module: str = GATEWAY_MODULE


VARIANTS = (
    Variant("gateway", "defaults: tracing off, no auth, in-memory breakers"),
    Variant("gateway-auth", "API-key auth and a per-key rate limit", auth=True),
    Variant("gateway-redis", "breaker state shared through Redis", redis_db=0),
    Variant("gateway-prod", "auth, rate limit and the Redis breaker", auth=True, redis_db=1),
    Variant("gateway-traced", "100 % of requests traced, OTLP export", sampling=1.0),
    Variant("gateway-traced-10", "10 % of requests traced, OTLP export", sampling=0.1),
) + (
    (Variant("gateway-uvloop", "defaults, on uvloop", module="bench.uvloop_gateway"),)
    if importlib.util.find_spec("uvloop") is not None
    else ()
)
PATH_WHAT = {
    "direct": "client to the agent",
    "baseline": "bare Python proxy (bench/proxy.py), one grpc.aio hop",
    PARSED: "the same proxy parsing and re-serializing both messages, with the principal "
    "header and one interceptor (bench/proxy.py --parse): a hop's unavoidable gRPC work",
    "nginx": "nginx grpc_pass, one worker: one hop in C",
    **{v.name: v.what for v in VARIANTS},
}

# (key, what, goal as text, generator of the figure it is judged on).
TARGETS = (
    ("throughput_c64", "gateway throughput at c64 / bare Python proxy", ">= 0.90"),
    ("p50_c1", "gateway p50 at c1 / bare Python proxy", "<= 1.15"),
    ("prod_c64", "auth + rate limit + Redis breaker / plain gateway, throughput c64", ">= 0.85"),
    ("tracing_100", "throughput lost to tracing at 100 % sampling, c64", "<= 15%"),
    ("tracing_10", "throughput lost to tracing at 10 % sampling, c64", "<= 5%"),
    ("stream_rate", "streaming events/s through the gateway / direct", ">= 0.80"),
    ("first_event", "time to first streamed event through the gateway / direct", "<= 1.20"),
    ("fast_fail_p99", "open-breaker fast-fail p99", "<= 1 ms"),
    ("stream_memory", "memory per open stream held by the gateway", "<= 64 KB"),
    ("fanout_16", "fan-out of 16 legs of 50 ms / one leg", "<= 1.20"),
    ("idle_agent_rss", "an idle agent's resident memory", "<= 60 MB"),
)


@dataclass(frozen=True, slots=True)
class Options:
    requests: int = 1000  # Python calls per latency measurement
    concurrency: tuple[int, ...] = (1, 16, 64)  # Python client levels
    h2load_concurrency: tuple[int, ...] = (64,)
    h2load_seconds: float = 3.0  # per h2load measurement (0: h2load_requests)
    h2load_requests: int = 0
    h2load_warm_up: int = 300
    rounds: int = 5
    fanout_widths: tuple[int, ...] = (1, 4, 16)
    fanout_repeats: int = 40
    fast_fail_requests: int = 2000
    stream: streaming.StreamOptions = field(default_factory=streaming.StreamOptions)
    open_streams: scale.OpenStreamOptions = field(default_factory=scale.OpenStreamOptions)
    registry: scale.RegistryOptions = field(default_factory=scale.RegistryOptions)
    jobs: scale.JobOptions = field(default_factory=scale.JobOptions)
    profile_seconds: float = 8.0  # 0: no profile
    interceptor_requests: int = 3000
    interceptor_configs: tuple[str, ...] = tracing_cost.CONFIGS
    stack_calls: int = 20000  # bench.stack: the gateway's handler stack in process
    settle: float = 2.0
    install: bool = True  # apt-get missing native tools when root
    without: tuple[str, ...] = ()  # native tools to do without, as if missing
    tiny: bool = False
    out: Path = REPO_ROOT / "bench" / "results"


TINY = Options(
    requests=40,
    concurrency=(1, 64),
    h2load_seconds=0.0,
    h2load_requests=200,
    h2load_warm_up=0,
    rounds=1,
    fanout_widths=(1, 4, 16),
    fanout_repeats=2,
    fast_fail_requests=20,
    stream=streaming.StreamOptions(events=10, calls=5, concurrency=4, requests=20, rounds=1),
    open_streams=scale.OpenStreamOptions(count=50, batch=50, unary_calls=10),
    registry=scale.RegistryOptions(agents=20, servers=1, list_calls=2),
    jobs=scale.JobOptions(latency_jobs=3, throughput_jobs=10, submitters=2),
    profile_seconds=0.0,
    interceptor_requests=50,
    interceptor_configs=("bare", "lean-on"),
    stack_calls=200,
    settle=0.2,
    install=False,
    tiny=True,
)
"""A handful of requests per measurement: proves the harness works, measures nothing."""


# ------------------------------------------------------------------ the mesh


@dataclass
class Mesh:
    """Every process of the run, where to reach each path, and what was skipped."""

    workdir: Path
    options: Options
    tools: dict[str, native.Tool] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    meshes: list[LocalMesh] = field(default_factory=list)
    natives: dict[str, native.NativeProcess] = field(default_factory=dict)
    routes: dict[str, Route] = field(default_factory=dict)
    pids: dict[str, int] = field(default_factory=dict)
    api_key: str = ""
    redis_url: str = ""
    config_path: Path = Path()
    idle: dict[str, float] = field(default_factory=dict)

    @property
    def paths(self) -> list[str]:
        return list(self.routes)

    def url(self, path: str, *, stream: bool = False) -> str:
        route = self.routes[path]
        return f"http://{route.address}{route.invoke_stream if stream else route.invoke}"

    def servers(self, path: str) -> dict[str, int]:
        """The processes serving ``path`` (their CPU per request is recorded)."""
        hop = {"direct": [], "baseline": ["proxy"], "nginx": ["nginx"]}.get(path, [path])
        variant = next((v for v in VARIANTS if v.name == path), None)
        extra = []
        if variant is not None and variant.redis_db is not None:
            extra.append("redis")
        if variant is not None and variant.sampling is not None:
            extra.append("receiver")
        return {name: self.pids[name] for name in [*hop, "agent", *extra] if name in self.pids}

    def memory(self) -> dict[str, float]:
        return {name: rss_mb(pid) for name, pid in self.pids.items()}

    @property
    def h2load(self) -> str | None:
        tool = self.tools.get("h2load")
        return tool.path if tool is not None else None


def gateway_config(agent: str, dead: str, widest: int) -> dict[str, Any]:
    """``bench`` and ``slow-N`` at the one agent; ``dead`` nowhere, its breaker quick to open."""
    agents: dict[str, Any] = {"bench": {"address": agent}}
    agents.update({f"slow-{i}": {"address": agent} for i in range(widest)})
    agents["dead"] = {
        "address": dead,
        "breaker": {"failure_threshold": 1, "reset_timeout": 3600},
        "retry": {"max_attempts": 1},
    }
    return {"agents": agents}


def keys_file(path: Path, key: str) -> Path:
    """One API key allowed everything, with a per-key rate limit that refuses nothing here."""
    path.write_text(
        yaml.safe_dump(
            {
                "keys": [
                    {
                        "id": "bench",
                        "hash": hash_key(key),
                        "scopes": {"agents": ["*"], "skills": ["*"], "workflows": ["*"]},
                        "rate_limit": {"rate": RATE_LIMIT, "burst": RATE_LIMIT},
                    }
                ]
            }
        )
    )
    return path


def quiet_env() -> dict[str, str]:
    return {"OTEL_SDK_DISABLED": "true", "PYTHONPATH": str(REPO_ROOT)}


def variant_env(mesh: Mesh, variant: Variant, receiver: str) -> dict[str, str]:
    env = {**quiet_env(), "AGENTMESH_CONFIG": str(mesh.config_path)}
    if variant.auth:
        env["AGENTMESH_AUTH_REQUIRED"] = "true"
        env["AGENTMESH_AUTH_KEYS_FILE"] = str(keys_file(mesh.workdir / "keys.yaml", mesh.api_key))
    if variant.redis_db is not None:
        env["AGENTMESH_REDIS_URL"] = f"{mesh.redis_url}/{variant.redis_db}"
    if variant.sampling is not None:
        env.update(
            {
                "OTEL_SDK_DISABLED": "false",
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{receiver}",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                "OTEL_TRACES_SAMPLER_ARG": f"{variant.sampling:g}",
            }
        )
    return env


def find_tools(mesh: Mesh) -> None:
    for command in native.PACKAGES:
        if command in mesh.options.without:
            tool = native.Tool(command, native.PACKAGES[command], None, "left out (--without)")
        else:
            tool = native.locate(command, install=mesh.options.install)
        mesh.tools[command] = tool
        if not tool.found:
            mesh.skipped[command] = tool.reason
    if mesh.options.profile_seconds <= 0:
        mesh.skipped["profile"] = "not in this mode (tiny)" if mesh.options.tiny else "--no-profile"
    elif profile.py_spy() is None:
        mesh.skipped["profile"] = "py-spy not found (pip install py-spy; the bench extra has it)"
    elif mesh.h2load is None:
        mesh.skipped["profile"] = "h2load is missing: no native load to profile under"


async def start(mesh: Mesh) -> None:
    """Start every process the tools allow; fill ``mesh.routes`` and ``mesh.pids``."""
    options = mesh.options
    names = [
        "receiver", "agent", "proxy", PARSED, "nginx", "redis", "dead", *(v.name for v in VARIANTS)
    ]  # fmt: skip
    port = dict(zip(names, free_ports(len(names)), strict=True))
    address = {name: f"{HOST}:{p}" for name, p in port.items()}
    mesh.api_key = new_key()
    mesh.config_path = mesh.workdir / "gateway.yaml"
    config = gateway_config(address["agent"], address["dead"], max(options.fanout_widths))
    mesh.config_path.write_text(yaml.safe_dump(config))
    logs = mesh.workdir / "logs"
    redis_tool = mesh.tools["redis-server"]
    if redis_tool.found:
        process = await native.start_redis(redis_tool, mesh.workdir / "redis", port["redis"])
        mesh.natives["redis"] = process
        mesh.pids["redis"] = process.pid
        mesh.redis_url = f"redis://{address['redis']}"
    base = [
        ServiceSpec("receiver", "bench.receiver", HOST, port["receiver"], quiet_env()),
        ServiceSpec("agent", "bench.agent", HOST, port["agent"], quiet_env()),
        ServiceSpec(
            "proxy",
            "bench.proxy",
            HOST,
            port["proxy"],
            {**quiet_env(), "BENCH_PROXY_UPSTREAM": address["agent"]},
        ),
        ServiceSpec(
            PARSED,
            "bench.proxy",
            HOST,
            port[PARSED],
            {**quiet_env(), "BENCH_PROXY_UPSTREAM": address["agent"], "BENCH_PROXY_PARSE": "1"},
        ),
    ]
    variants = [v for v in VARIANTS if v.redis_db is None or redis_tool.found]
    for v in VARIANTS:
        if v not in variants:
            mesh.skipped[v.name] = f"needs redis-server: {redis_tool.reason}"
    # Agents first, then every gateway at once (each fetches the agent's card as it starts).
    mesh.meshes.append(LocalMesh(base, log_dir=logs, grace_period=2))
    await mesh.meshes[0].start()
    gateways = [
        LocalMesh(
            [
                ServiceSpec(
                    v.name, v.module, HOST, port[v.name],
                    variant_env(mesh, v, address["receiver"]),
                )
            ],
            log_dir=logs,
            grace_period=2,
            startup_timeout=60,
        )
        for v in variants
    ]  # fmt: skip
    mesh.meshes += gateways
    await asyncio.gather(*(g.start() for g in gateways))
    nginx_tool = mesh.tools["nginx"]
    if nginx_tool.found:
        process = await native.start_nginx(
            nginx_tool, mesh.workdir / "nginx", port["nginx"], address["agent"]
        )
        mesh.natives["nginx"] = process
        mesh.pids["nginx"] = process.pid
    else:
        mesh.skipped["nginx path"] = f"needs nginx: {nginx_tool.reason}"
    for m in mesh.meshes:
        for running in m.running:
            mesh.pids[running.spec.name] = running.process.pid
    auth = (("x-api-key", mesh.api_key),)
    mesh.routes["direct"] = Route(address["agent"], AGENT_INVOKE, AGENT_INVOKE_STREAM)
    mesh.routes["baseline"] = Route(address["proxy"], AGENT_INVOKE, AGENT_INVOKE_STREAM)
    mesh.routes[PARSED] = Route(address[PARSED], AGENT_INVOKE, AGENT_INVOKE_STREAM)
    if "nginx" in mesh.natives:
        mesh.routes["nginx"] = Route(address["nginx"], AGENT_INVOKE, AGENT_INVOKE_STREAM)
    for v in variants:
        mesh.routes[v.name] = Route(
            address[v.name], GATEWAY_INVOKE, GATEWAY_INVOKE_STREAM, auth if v.auth else ()
        )


async def stop(mesh: Mesh) -> None:
    for m in reversed(mesh.meshes):
        await m.stop()
    for process in mesh.natives.values():
        await process.stop()


# ------------------------------------------------------------------ sections


async def check_paths(mesh: Mesh, payload: bytes) -> dict[str, int]:
    """Every path answers the echo right; returns each answer's framed size (for h2load)."""
    sizes: dict[str, int] = {}
    for path, route in mesh.routes.items():
        async with grpc.aio.insecure_channel(route.address) as channel:
            answer = await raw_call(channel, route.invoke)(
                payload, timeout=CALL_TIMEOUT, metadata=route.metadata or None
            )
        reply = pb.InvokeResponse.FromString(answer)
        if reply.artifacts[0].parts[0].text != "hello":
            raise RuntimeError(f"{path}: unexpected reply {reply}")
        sizes[path] = len(h2load.grpc_frame(answer))
    return sizes


def h2load_load(options: Options, concurrency: int) -> h2load.Load:
    return h2load.Load(
        concurrency=concurrency,
        duration=options.h2load_seconds,
        requests=options.h2load_requests,
        warm_up_requests=options.h2load_warm_up,
    )


async def measure_unary(mesh: Mesh) -> dict[str, Any]:
    """Python latency and h2load throughput per path and concurrency, interleaved by round."""
    options = mesh.options
    payload = invoke_request("bench", "echo")
    sizes = await check_paths(mesh, payload)
    body = h2load.write_body(mesh.workdir / "invoke-request.bin", payload)
    python: dict[str, dict[int, list[Sample]]] = {
        p: {c: [] for c in options.concurrency} for p in mesh.paths
    }
    native_runs: dict[str, dict[int, list[h2load.H2Result]]] = {
        p: {c: [] for c in options.h2load_concurrency} for p in mesh.paths
    }
    channels = {p: grpc.aio.insecure_channel(r.address) for p, r in mesh.routes.items()}
    try:
        for _ in range(options.rounds):
            for concurrency in options.concurrency:
                for path, route in mesh.routes.items():
                    python[path][concurrency].append(
                        await drive(
                            channels[path],
                            route.invoke,
                            payload,
                            requests=max(options.requests, concurrency),
                            concurrency=concurrency,
                            metadata=route.metadata,
                        )
                    )
            if mesh.h2load is None:
                continue
            for concurrency in options.h2load_concurrency:
                for path, route in mesh.routes.items():
                    native_runs[path][concurrency].append(
                        await h2load.run(
                            mesh.h2load,
                            mesh.url(path),
                            body,
                            h2load_load(options, concurrency),
                            expected_bytes=sizes[path],
                            headers=route.metadata,
                            servers=mesh.servers(path),
                        )
                    )
    finally:
        for channel in channels.values():
            await channel.close()
    result: dict[str, Any] = {
        "python": {
            path: {
                str(c): {**asdict(median_sample(s)), "rounds_p50_ms": [x.p50_ms for x in s]}
                for c, s in by_c.items()
            }
            for path, by_c in python.items()
        }
    }
    if mesh.h2load is not None:
        result["h2load"] = {
            path: {str(c): h2load.median_run(runs) for c, runs in by_c.items()}
            for path, by_c in native_runs.items()
        }
    return result


def fanout_request(width: int) -> bytes:
    request = gateway_pb2.FanOutRequest(
        targets=[gateway_pb2.Target(agent=f"slow-{i}", skill="sleep") for i in range(width)],
        message=pb.Message(parts=[pb.Part(text="wait")]),
    )
    request.options["ms"] = LEG_MS
    return request.SerializeToString()


async def measure_fanout(mesh: Mesh) -> dict[str, Any]:
    """One 50 ms leg called directly, then FanOut of each width through the gateway."""
    repeats = mesh.options.fanout_repeats
    async with grpc.aio.insecure_channel(mesh.routes["direct"].address) as channel:
        leg = await drive(
            channel,
            AGENT_INVOKE,
            invoke_request("bench", "sleep", ms=LEG_MS),
            requests=repeats,
            concurrency=1,
        )
    widths: dict[str, Any] = {}
    async with grpc.aio.insecure_channel(mesh.routes["gateway"].address) as channel:
        for width in mesh.options.fanout_widths:
            payload = fanout_request(width)
            reply = gateway_pb2.FanOutResponse.FromString(
                await raw_call(channel, GATEWAY_FANOUT)(payload, timeout=CALL_TIMEOUT)
            )
            if reply.succeeded != width:
                raise RuntimeError(f"fan-out of {width}: {reply.succeeded} legs succeeded")
            sample = await drive(channel, GATEWAY_FANOUT, payload, requests=repeats, concurrency=1)
            widths[str(width)] = {
                **asdict(sample),
                "over_one_leg": round(sample.p50_ms / leg.p50_ms, 3),
            }
    return {"leg_ms": LEG_MS, "one_leg_direct": asdict(leg), "widths": widths}


async def fast_fail(route: Route, requests: int) -> dict[str, Any]:
    """Open ``dead``'s breaker with one failed call, then time calls that fail fast."""
    payload = invoke_request("dead", "echo")
    metadata = route.metadata or None
    async with grpc.aio.insecure_channel(route.address) as channel:
        call = raw_call(channel, GATEWAY_INVOKE)
        details = ""
        for _ in range(5):  # the first failure opens it (failure_threshold: 1)
            try:
                await call(payload, timeout=CALL_TIMEOUT, metadata=metadata)
            except grpc.aio.AioRpcError as exc:
                details = exc.details() or ""
                if "open" in details:
                    break
        else:
            raise RuntimeError(f"the breaker of 'dead' did not open: {details!r}")
        latencies: list[float] = []
        codes: set[str] = set()
        started = time.perf_counter()
        for _ in range(requests):
            began = time.perf_counter()
            try:
                await call(payload, timeout=CALL_TIMEOUT, metadata=metadata)
            except grpc.aio.AioRpcError as exc:
                codes.add(exc.code().name)
            latencies.append(time.perf_counter() - began)
        sample = summarize(latencies, time.perf_counter() - started)
    return {**asdict(sample), "codes": sorted(codes), "detail": details}


async def client_floor(route: Route, requests: int) -> dict[str, Any]:
    """The same sequential Python calls answered by the agent itself (no hop, no failure):
    what the client, the loopback and the machine's scheduling cost on their own."""
    payload = invoke_request("bench", "echo")
    async with grpc.aio.insecure_channel(route.address) as channel:
        call = raw_call(channel, route.invoke)
        latencies: list[float] = []
        started = time.perf_counter()
        for _ in range(requests):
            began = time.perf_counter()
            await call(payload, timeout=CALL_TIMEOUT)
            latencies.append(time.perf_counter() - began)
        sample = summarize(latencies, time.perf_counter() - started)
    return {**asdict(sample), "codes": ["OK"], "detail": "the agent called directly"}


async def measure_fast_fail(mesh: Mesh) -> dict[str, Any]:
    results: dict[str, Any] = {
        path: await fast_fail(mesh.routes[path], mesh.options.fast_fail_requests)
        for path in ("gateway", "gateway-prod")
        if path in mesh.routes
    }
    results["direct"] = await client_floor(mesh.routes["direct"], mesh.options.fast_fail_requests)
    return results


async def measure_streaming(mesh: Mesh) -> dict[str, Any]:
    paths = [p for p in STREAM_PATHS if p in mesh.routes]
    return await streaming.measure(
        {p: mesh.routes[p] for p in paths},
        {p: mesh.url(p, stream=True) for p in paths},
        {p: mesh.servers(p) for p in paths},
        replace(mesh.options.stream, rounds=mesh.options.rounds),
        h2load_path=mesh.h2load,
        workdir=mesh.workdir,
    )


async def measure_profile(mesh: Mesh) -> dict[str, Any]:
    """py-spy of each PROFILED process while h2load drives its path at c64."""
    assert mesh.h2load is not None
    options = mesh.options
    seconds = options.profile_seconds
    body = h2load.write_body(mesh.workdir / "profile-request.bin", invoke_request("bench", "echo"))
    results: dict[str, Any] = {"seconds": seconds, "rate": 100, "concurrency": 64}
    for path in PROFILED:
        name = "proxy" if path == "baseline" else path
        load = h2load.Load(concurrency=64, duration=seconds + 3, warm_up_requests=300)
        driving = asyncio.create_task(
            h2load.run(mesh.h2load, mesh.url(path), body, load, expected_bytes=0,
                       headers=mesh.routes[path].metadata, servers={name: mesh.pids[name]})
        )  # fmt: skip
        await asyncio.sleep(1.5)  # past the warm-up, into the measured run
        raw = await profile.record(
            mesh.pids[name], seconds, options.out / f"profile-{path}.txt", rate=100
        )
        run = await driving
        results[path] = {
            **profile.summarize(raw.read_text()),
            "rps_while_sampled": run.rps,
            "cpu_us_per_request": run.server_cpu_us_per_request[name],
            "raw": raw.name,
        }
    return results


async def measure_jobs(mesh: Mesh) -> dict[str, Any]:
    stores = {"memory": "gateway", "redis": "gateway-redis"}
    results: dict[str, Any] = {}
    for store, path in stores.items():
        if path not in mesh.routes:
            results[store] = {"skipped": mesh.skipped.get(path, "not started")}
            continue
        results[store] = {
            "gateway": path,
            **await scale.jobs(mesh.routes[path].address, mesh.options.jobs),
        }
    return results


async def measure_open_streams(mesh: Mesh) -> dict[str, Any]:
    """A gateway of its own (fresh memory), in front of the same agent."""
    (port,) = free_ports(1)
    spec = ServiceSpec(
        "gateway-scale", GATEWAY_MODULE, HOST, port,
        {**quiet_env(), "AGENTMESH_CONFIG": str(mesh.config_path)},
    )  # fmt: skip
    front = LocalMesh([spec], log_dir=mesh.workdir / "logs", grace_period=1, startup_timeout=60)
    await front.start()
    try:
        await asyncio.sleep(mesh.options.settle)
        return await scale.open_streams(
            spec.address, mesh.routes["direct"].address, front.running[0].process.pid,
            mesh.pids["agent"], mesh.options.open_streams,
        )  # fmt: skip
    finally:
        await front.stop()


def measure_interceptor(options: Options) -> dict[str, Any]:
    """bench.tracing_cost's configurations: the server interceptor alone, on one hop."""
    results = tracing_cost.run(
        options.interceptor_configs,
        requests=options.interceptor_requests,
        concurrency=16,
        rounds=options.rounds,
    )
    return {"requests": options.interceptor_requests, "concurrency": 16, "results": results}


def measure_stack(options: Options) -> dict[str, Any]:
    """bench.stack in a fresh process per round: µs of agentmesh's own Python per call."""
    rounds = []
    for _ in range(options.rounds):
        command = [sys.executable, "-m", "bench.stack", "--calls", str(options.stack_calls)]
        done = subprocess.run(
            command, env={**os.environ, **quiet_env()}, capture_output=True, text=True,
            timeout=300, check=True,
        )  # fmt: skip
        rounds.append(json.loads(done.stdout)["us_per_call"])
    return {
        "calls": options.stack_calls,
        "rounds": rounds,
        "us_per_call": statistics.median(rounds),
    }


def breakdown(result: Mapping[str, Any]) -> dict[str, Any] | None:
    """The gateway's CPU per request above the bare proxy, split where it can be measured."""
    cpu = result.get("comparisons", {}).get("cpu_us_per_request", {}).get("paths", {})
    if not all(p in cpu for p in ("baseline", PARSED, "gateway")):
        return None
    proxy, parsed, gateway = (cpu[p]["hop"] for p in ("baseline", PARSED, "gateway"))
    stack = result["stack"]["us_per_call"]
    return {
        "proxy_us": proxy,
        "gateway_us": gateway,
        "above_proxy_us": round(gateway - proxy, 1),
        "parsing_hop_us": round(parsed - proxy, 1),
        "handler_stack_us": stack,
        "rest_us": round(gateway - parsed - stack, 1),
    }


# ------------------------------------------------------------------ the run


async def run_mesh(options: Options, workdir: Path) -> dict[str, Any]:
    mesh = Mesh(workdir=workdir, options=options)
    find_tools(mesh)
    sections: dict[str, Any] = {}
    timings: dict[str, float] = {}

    async def section(name: str, work: Any) -> None:
        began = time.monotonic()
        sections[name] = await work
        timings[name] = round(time.monotonic() - began, 1)

    try:
        began = time.monotonic()
        await start(mesh)
        timings["start"] = round(time.monotonic() - began, 1)
        await asyncio.sleep(options.settle)  # let start-up settle before reading idle memory
        idle = mesh.memory()
        plain_idle_kib = rss_kib(mesh.pids["gateway"])
        await section("unary", measure_unary(mesh))
        await section("fanout", measure_fanout(mesh))
        await section("fast_fail", measure_fast_fail(mesh))
        await section("streaming", measure_streaming(mesh))
        if "profile" not in mesh.skipped:
            await section("profile", measure_profile(mesh))
        await section("jobs", measure_jobs(mesh))
        loaded = mesh.memory()
        await section("open_streams", measure_open_streams(mesh))
        await section(
            "registry",
            scale.registry(
                options.registry, workdir, env=quiet_env(), plain_idle_kib=plain_idle_kib
            ),
        )
    finally:
        await stop(mesh)
    return {
        **sections,
        "memory": {"idle": idle, "after_load": loaded},
        "paths": {p: PATH_WHAT[p] for p in mesh.paths},
        "tools": {name: tool.describe() for name, tool in mesh.tools.items()},
        "skipped": mesh.skipped,
        "section_seconds": timings,
    }


def conditions(options: Options) -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "grpcio": grpc.__version__,
        "protobuf_backend": api_implementation.Type(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_before": load_average(),
        "mode": "tiny" if options.tiny else "full",
        "python_requests_per_measurement": options.requests,
        "python_concurrency": list(options.concurrency),
        "h2load_concurrency": list(options.h2load_concurrency),
        "h2load_seconds": options.h2load_seconds,
        "h2load_requests": options.h2load_requests,
        "rounds": options.rounds,
        "python_client": "one asyncio process, raw bytes over one channel per path",
        "h2load_client": f"h2load, one thread, up to {h2load.MAX_CONNECTIONS} connections, "
        "pre-framed gRPC request body",
    }


def raise_nofile() -> dict[str, int]:
    """Open-file limit up to its hard limit (10,000 streams; the children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        wanted = 65536 if hard == resource.RLIM_INFINITY else hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {"soft": soft, "hard": hard}


def run(options: Options) -> dict[str, Any]:
    """Every section, one run; returns the report (also written to ``options.out``)."""
    began = time.monotonic()
    options.out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"conditions": conditions(options)}
    result["conditions"]["nofile"] = raise_nofile()
    with tempfile.TemporaryDirectory(prefix="agentmesh-bench-") as workdir:
        result.update(asyncio.run(run_mesh(options, Path(workdir))))
    interceptor_began = time.monotonic()
    result["interceptor"] = measure_interceptor(options)
    result["section_seconds"]["interceptor"] = round(time.monotonic() - interceptor_began, 1)
    stack_began = time.monotonic()
    result["stack"] = measure_stack(options)
    result["section_seconds"]["stack"] = round(time.monotonic() - stack_began, 1)
    result["conditions"]["load_average_after"] = load_average()
    result["conditions"]["seconds"] = round(time.monotonic() - began, 1)
    result["comparisons"] = comparisons(result)
    result["breakdown"] = breakdown(result)
    result["targets"] = targets(result)
    report.write(result, options.out)
    return result


# ------------------------------------------------------------------ figures


def _ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 3) if denominator else None


def comparisons(result: Mapping[str, Any]) -> dict[str, Any]:
    """Every path against each floor: throughput (h2load, else Python) and p50 (Python)."""
    unary = result["unary"]
    python = unary["python"]
    native_runs = unary.get("h2load")
    low = str(min(int(c) for c in next(iter(python.values()))))
    top = str(max(int(c) for c in next(iter(python.values()))))
    out: dict[str, Any] = {}
    if native_runs:
        level = str(max(int(c) for c in next(iter(native_runs.values()))))
        rps = {p: by_c[level]["rps"] for p, by_c in native_runs.items()}
        out["throughput"] = {"generator": h2load.GENERATOR, "concurrency": int(level)}
    else:
        rps = {p: by_c[top]["rps"] for p, by_c in python.items()}
        out["throughput"] = {"generator": "python", "concurrency": int(top)}
    p50 = {p: by_c[low]["p50_ms"] for p, by_c in python.items()}
    floors = [f for f in FLOORS if f in python]
    out["throughput"]["over"] = {p: {f: _ratio(rps[p], rps[f]) for f in floors} for p in rps}
    out["p50"] = {
        "generator": "python",
        "concurrency": int(low),
        "over": {p: {f: _ratio(p50[p], p50[f]) for f in floors} for p in p50},
    }
    if native_runs:
        out["cpu_us_per_request"] = {
            "generator": h2load.GENERATOR,
            "concurrency": int(level),
            "paths": {p: cpu_per_request(by_c[level], p) for p, by_c in native_runs.items()},
        }
    return out


def cpu_per_request(run: Mapping[str, Any], path: str) -> dict[str, float]:
    """CPU µs per request of the hop itself and of everything serving the path plus h2load.

    On a machine whose cores are all busy, throughput ratios follow the
    inverse ratio of ``total``; it moves much less with other load than
    throughput does, so it cross-checks each throughput figure.
    """
    servers = run["server_cpu_us_per_request"]
    client = run["client_cpu_ms"] * 1000 / max(run["requests"], 1)
    hop = {"direct": None, "baseline": "proxy"}.get(path, path)
    return {
        "hop": round(servers.get(hop, 0.0) if hop else 0.0, 1),
        "total": round(sum(servers.values()) + client, 1),
    }


def round_ratios(
    numerator: Mapping[str, Any], denominator: Mapping[str, Any], top: str, bottom: str
) -> tuple[float, float] | None:
    """Throughput of path ``top`` over path ``bottom`` (their :func:`h2load.median_run`
    results, measured in the same rounds), and the same as CPU per request predicts it:
    each the median of the rounds' own ratios, so that what changed on the machine
    between rounds falls on both paths alike. None without rounds to pair."""
    rounds = list(zip(numerator.get("rounds", ()), denominator.get("rounds", ()), strict=True))
    by_rps = [a["rps"] / b["rps"] for a, b in rounds if b["rps"]]
    totals = [
        (cpu_per_request(a, top)["total"], cpu_per_request(b, bottom)["total"]) for a, b in rounds
    ]
    by_cpu = [under / over for over, under in totals if over]
    if not by_rps or not by_cpu:
        return None
    return round(statistics.median(by_rps), 3), round(statistics.median(by_cpu), 3)


def targets(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each target with its measured value, the generator behind it, and whether it is met."""
    comparison = result["comparisons"]
    rps_generator = comparison["throughput"]["generator"]
    unary = result["unary"]
    python = unary["python"]
    native_runs = unary.get("h2load")
    level = str(comparison["throughput"]["concurrency"])

    def rps(path: str) -> float | None:
        source = native_runs if native_runs else python
        return source[path][level]["rps"] if path in source else None

    cpu = comparison.get("cpu_us_per_request", {}).get("paths", {})

    def paired(numerator: str, denominator: str) -> tuple[float | None, float | None]:
        """Throughput numerator/denominator, and as CPU per request predicts it: round by
        round when h2load measured both, else from the medians."""
        if native_runs and numerator in native_runs and denominator in native_runs:
            by_round = round_ratios(
                native_runs[numerator][level], native_runs[denominator][level],
                numerator, denominator,
            )  # fmt: skip
            if by_round is not None:
                return by_round
        top, bottom = rps(numerator), rps(denominator)
        by_medians = _ratio(top, bottom) if top is not None and bottom else None
        if numerator not in cpu or denominator not in cpu:
            return by_medians, None
        return by_medians, _ratio(cpu[denominator]["total"], cpu[numerator]["total"])

    values: dict[str, tuple[float | None, str, str]] = {}
    checks: dict[str, float | None] = {}
    for key, numerator, denominator in (
        ("throughput_c64", "gateway", "baseline"),
        ("prod_c64", "gateway-prod", "gateway"),
    ):
        ratio, checks[key] = paired(numerator, denominator)
        values[key] = (ratio, "x", rps_generator)
    low = str(comparison["p50"]["concurrency"])
    gateway_p50 = python.get("gateway", {}).get(low, {}).get("rounds_p50_ms", [])
    baseline_p50 = python.get("baseline", {}).get(low, {}).get("rounds_p50_ms", [])
    by_round = [g / b for g, b in zip(gateway_p50, baseline_p50, strict=True) if b]
    values["p50_c1"] = (
        round(statistics.median(by_round), 3)
        if by_round
        else comparison["p50"]["over"]["gateway"].get("baseline"),
        "x",
        "python",
    )
    for key, path in (("tracing_100", "gateway-traced"), ("tracing_10", "gateway-traced-10")):
        kept, kept_by_cpu = paired(path, "gateway")
        values[key] = (None if kept is None else round(1 - kept, 3), "%", rps_generator)
        checks[key] = None if kept_by_cpu is None else round(1 - kept_by_cpu, 3)
    stream = result["streaming"]
    if "h2load" in stream:
        rate = stream["h2load"]
        checks["stream_rate"] = _ratio(
            cpu_per_request(rate["direct"], "direct")["total"],
            cpu_per_request(rate["gateway"], "gateway")["total"],
        )
        values["stream_rate"] = (
            _ratio(rate["gateway"]["events_per_s"], rate["direct"]["events_per_s"]),
            "x",
            h2load.GENERATOR,
        )
    else:
        rate = stream["python"]
        values["stream_rate"] = (
            _ratio(rate["gateway"]["events_per_s_p50"], rate["direct"]["events_per_s_p50"]),
            "x",
            "python",
        )
    first = stream["python"]
    values["first_event"] = (
        _ratio(first["gateway"]["first_event_p50_ms"], first["direct"]["first_event_p50_ms"]),
        "x",
        "python",
    )
    values["fast_fail_p99"] = (result["fast_fail"]["gateway"]["p99_ms"], "ms", "python")
    per_stream = result["open_streams"]["bytes_per_open_stream"]["gateway"]
    values["stream_memory"] = (round(per_stream / 1000, 1), "KB", "python")
    widths = result["fanout"]["widths"]
    widest = widths[str(max(int(w) for w in widths))]
    values["fanout_16"] = (widest["over_one_leg"], "x", "python")
    values["idle_agent_rss"] = (result["memory"]["idle"]["agent"], "MB", "")
    out = []
    for key, what, goal in TARGETS:
        value, unit, generator = values[key]
        check = checks.get(key)
        out.append(
            {
                "key": key,
                "what": what,
                "goal": goal,
                "value": value,
                "measured": _shown(value, unit),
                "met": None if value is None else meets(value, goal),
                "generator": generator,
                "from_cpu": check,
                "from_cpu_shown": _shown(check, unit) if check is not None else "",
            }
        )
    return out


def _shown(value: float | None, unit: str) -> str:
    if value is None:
        return "not measured"
    if unit == "x":
        return f"x{value}"
    if unit == "%":
        return f"{value:.1%}"
    return f"{value} {unit}"


def meets(value: float, goal: str) -> bool:
    operator, number = goal.split()[:2]
    limit = float(number.rstrip("%")) / (100 if number.endswith("%") else 1)
    return value >= limit if operator == ">=" else value <= limit


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--tiny", action="store_true", help="a handful of requests (a smoke run)")
    parser.add_argument("--requests", type=int, help="Python calls per latency measurement")
    parser.add_argument("--seconds", type=float, help="seconds per h2load measurement")
    parser.add_argument("--rounds", type=int, help="interleaved repetitions")
    parser.add_argument("--concurrency", help="Python client levels, e.g. 1,16,64")
    parser.add_argument("--streams", type=int, help="open streams held by one gateway")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile")
    parser.add_argument(
        "--no-install", action="store_true", help="never apt-get a missing native tool"
    )
    parser.add_argument(
        "--without",
        default="",
        help=f"comma-separated native tools to do without, of {', '.join(native.PACKAGES)}",
    )
    parser.add_argument("--out", type=Path, help="directory for latest.json/.md and the plots")
    args = parser.parse_args(argv)
    options = TINY if args.tiny else Options()
    if args.requests:
        options = replace(options, requests=args.requests, interceptor_requests=args.requests)
    if args.seconds:
        options = replace(options, h2load_seconds=args.seconds, h2load_requests=0)
    if args.rounds:
        options = replace(options, rounds=args.rounds)
    if args.concurrency:
        levels = tuple(sorted({int(c) for c in args.concurrency.split(",") if c}))
        if not levels or min(levels) < 1:
            parser.error("--concurrency: positive integers, e.g. 1,64")
        options = replace(options, concurrency=levels)
    if args.streams:
        options = replace(options, open_streams=replace(options.open_streams, count=args.streams))
    if args.no_profile:
        options = replace(options, profile_seconds=0.0)
    if args.no_install:
        options = replace(options, install=False)
    without = tuple(t for t in args.without.split(",") if t)
    unknown = sorted(set(without) - set(native.PACKAGES))
    if unknown:
        parser.error(f"--without: unknown tools {', '.join(unknown)}")
    options = replace(options, without=without)
    if args.out:
        options = replace(options, out=args.out)
    result = run(options)
    print(report.markdown(result))
    print(f"written to {options.out} in {result['conditions']['seconds']:.0f}s")
