"""The gateway's cost against a bare Python gRPC hop, measured in one run.

``python -m bench`` (or ``make bench``) starts real processes on 127.0.0.1
with agentmesh's own runner (:class:`agentmesh.cli.runner.LocalMesh`):

* ``agent``: :mod:`bench.agent` (``echo``, and ``sleep`` for 50 ms);
* ``proxy``: :mod:`bench.proxy`, a bare ``grpc.aio`` pass-through to the agent;
* ``gateway``: the gateway, tracing off;
* ``gateway-traced``: the gateway, every request sampled, spans exported over
  OTLP to ``receiver`` (:mod:`bench.receiver`);
* ``gateway-uvloop``: the gateway, tracing off, on uvloop's event loop;

then drives bounded load from this process (a fixed number of requests per
measurement) and reports:

* ``paths``: direct (client to agent), baseline (client to proxy to agent),
  gateway and gateway-traced, at each concurrency: throughput, p50, p99;
* ``fanout``: FanOut to 1, 4 and 16 legs of 50 ms, over one leg called directly;
* ``fast_fail``: latency of calls to an agent whose breaker is open;
* ``memory``: resident memory of every service, idle and after the load;
* ``interceptor``: the server interceptor's tracing cost on one hop
  (:mod:`bench.tracing_cost`, the same configurations as run alone);
* ``targets``: issue 9's targets, each with its measured value and whether it is met.

Paths are measured interleaved, ``--rounds`` times, and the median of each is
kept, so noise on a shared machine hits every path alike; every ratio comes
from the same run. Output: ``latest.json``, ``latest.md`` and ``latency.png``
(with the ``bench`` extra) in ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import yaml
from google.protobuf.internal import api_implementation

from agentmesh.cli.runner import GATEWAY_MODULE, LocalMesh, ServiceSpec
from agentmesh.v1 import gateway_pb2
from agentmesh.v1 import messages_pb2 as pb
from bench import tracing_cost

REPO_ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"

# gateway-uvloop only with uvloop installed (the ``bench`` extra).
PATHS = ("direct", "baseline", "gateway", "gateway-traced") + (
    ("gateway-uvloop",) if importlib.util.find_spec("uvloop") is not None else ()
)
AGENT_INVOKE = "/agentmesh.v1.Agent/Invoke"
GATEWAY_INVOKE = "/agentmesh.v1.Gateway/Invoke"
GATEWAY_FANOUT = "/agentmesh.v1.Gateway/FanOut"
LEG_MS = 50.0
CALL_TIMEOUT = 30.0

# Issue 9's targets: (key, what, goal as text).
TARGETS = (
    ("throughput_c64", "gateway throughput at concurrency 64 / baseline's", ">= 0.90"),
    ("p50_c1", "gateway p50 at concurrency 1 / baseline's", "<= 1.15"),
    ("tracing_cost_c64", "throughput lost to tracing at 100% sampling, concurrency 64", "<= 15%"),
    ("fanout_16", "fan-out of 16 legs of 50 ms / one leg", "<= 1.20"),
    ("fast_fail_p99", "open-breaker fast-fail p99", "<= 1 ms"),
    ("idle_agent_rss", "an idle agent's resident memory", "<= 60 MB"),
)


@dataclass(frozen=True, slots=True)
class Options:
    requests: int = 3000
    concurrency: tuple[int, ...] = (1, 4, 16, 64)
    rounds: int = 3
    fanout_widths: tuple[int, ...] = (1, 4, 16)
    fanout_repeats: int = 40
    fast_fail_requests: int = 2000
    interceptor_requests: int = 3000
    interceptor_configs: tuple[str, ...] = tracing_cost.CONFIGS
    settle: float = 2.0
    out: Path = REPO_ROOT / "bench" / "results"


TINY = Options(
    requests=64,
    concurrency=(1, 64),
    rounds=1,
    fanout_repeats=2,
    fast_fail_requests=20,
    interceptor_requests=50,
    interceptor_configs=("bare", "lean-on"),
    settle=0.2,
)
"""A handful of requests per measurement: proves the harness works, measures nothing."""


@dataclass(frozen=True, slots=True)
class Sample:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float


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


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` in MiB (Linux ``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def drive(
    channel: grpc.aio.Channel, method: str, payload: bytes, *, requests: int, concurrency: int
) -> Sample:
    """``requests`` calls of ``method`` with ``payload``, ``concurrency`` in flight at once.

    Requests and responses stay bytes, so the client's own cost is the same
    on every path and as small as grpc.aio allows.
    """
    call = raw_call(channel, method)

    async def once() -> None:
        await call(payload, timeout=CALL_TIMEOUT)

    return await timed(once, requests=requests, concurrency=concurrency)


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


RawCall = grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]


def raw_call(channel: grpc.aio.Channel, method: str) -> RawCall:
    """``method`` with bytes in and bytes out (no serializers)."""
    call: RawCall = channel.unary_unary(method)
    return call


def invoke_request(agent: str, skill: str, text: str = "hello", **options: float) -> bytes:
    request = pb.InvokeRequest(
        agent=agent, skill=skill, message=pb.Message(parts=[pb.Part(text=text)])
    )
    for key, value in options.items():
        request.options[key] = value
    return request.SerializeToString()


def fanout_request(width: int) -> bytes:
    request = gateway_pb2.FanOutRequest(
        targets=[gateway_pb2.Target(agent=f"slow-{i}", skill="sleep") for i in range(width)],
        message=pb.Message(parts=[pb.Part(text="wait")]),
    )
    request.options["ms"] = LEG_MS
    return request.SerializeToString()


# ------------------------------------------------------------------ the mesh


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


def mesh_specs(ports: Sequence[int], config_path: Path) -> list[ServiceSpec]:
    receiver, agent, proxy, gateway, traced, uvloop = ports
    quiet = {"OTEL_SDK_DISABLED": "true", "PYTHONPATH": str(REPO_ROOT)}
    gateway_env = {**quiet, "AGENTMESH_CONFIG": str(config_path)}
    traced_env = {
        **gateway_env,
        "OTEL_SDK_DISABLED": "false",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{HOST}:{receiver}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_TRACES_SAMPLER": "always_on",
    }
    return [
        ServiceSpec("receiver", "bench.receiver", HOST, receiver, quiet),
        ServiceSpec("agent", "bench.agent", HOST, agent, quiet),
        ServiceSpec(
            "proxy",
            "bench.proxy",
            HOST,
            proxy,
            {**quiet, "BENCH_PROXY_UPSTREAM": f"{HOST}:{agent}"},
        ),
        ServiceSpec("gateway", GATEWAY_MODULE, HOST, gateway, gateway_env),
        ServiceSpec("gateway-traced", GATEWAY_MODULE, HOST, traced, traced_env),
        ServiceSpec("gateway-uvloop", "bench.uvloop_gateway", HOST, uvloop, gateway_env),
    ][: len(PATHS) + 1]


def free_ports(count: int) -> list[int]:
    import socket

    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((HOST, 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


# ------------------------------------------------------------------ sections


async def measure_paths(address: dict[str, str], options: Options) -> dict[str, dict[str, Sample]]:
    """Median sample per path and concurrency, the paths interleaved round by round."""
    routes = {
        "direct": (address["agent"], AGENT_INVOKE),
        "baseline": (address["proxy"], AGENT_INVOKE),
        "gateway": (address["gateway"], GATEWAY_INVOKE),
        "gateway-traced": (address["gateway-traced"], GATEWAY_INVOKE),
        "gateway-uvloop": (address.get("gateway-uvloop", ""), GATEWAY_INVOKE),
    }
    payload = invoke_request("bench", "echo")
    samples: dict[str, dict[int, list[Sample]]] = {
        p: {c: [] for c in options.concurrency} for p in PATHS
    }
    channels = {p: grpc.aio.insecure_channel(routes[p][0]) for p in PATHS}
    try:
        for path in PATHS:  # every path answers the right thing before it is timed
            reply = pb.InvokeResponse.FromString(
                await raw_call(channels[path], routes[path][1])(payload, timeout=CALL_TIMEOUT)
            )
            if reply.artifacts[0].parts[0].text != "hello":
                raise RuntimeError(f"{path}: unexpected reply {reply}")
        for _ in range(options.rounds):
            for concurrency in options.concurrency:
                for path in PATHS:
                    samples[path][concurrency].append(
                        await drive(
                            channels[path],
                            routes[path][1],
                            payload,
                            requests=max(options.requests, concurrency),
                            concurrency=concurrency,
                        )
                    )
    finally:
        for channel in channels.values():
            await channel.close()
    return {
        path: {str(c): median_sample(s) for c, s in by_concurrency.items()}
        for path, by_concurrency in samples.items()
    }


def median_sample(samples: Sequence[Sample]) -> Sample:
    return Sample(
        requests=samples[0].requests,
        rps=round(statistics.median(s.rps for s in samples), 1),
        p50_ms=round(statistics.median(s.p50_ms for s in samples), 3),
        p99_ms=round(statistics.median(s.p99_ms for s in samples), 3),
    )


async def measure_fanout(address: dict[str, str], options: Options) -> dict[str, Any]:
    """One 50 ms leg called directly, then FanOut of each width through the gateway."""
    repeats = options.fanout_repeats
    async with grpc.aio.insecure_channel(address["agent"]) as channel:
        leg = await drive(
            channel,
            AGENT_INVOKE,
            invoke_request("bench", "sleep", ms=LEG_MS),
            requests=repeats,
            concurrency=1,
        )
    widths: dict[str, Any] = {}
    async with grpc.aio.insecure_channel(address["gateway"]) as channel:
        for width in options.fanout_widths:
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


async def measure_fast_fail(address: dict[str, str], options: Options) -> dict[str, Any]:
    """Open ``dead``'s breaker with one failed call, then time calls that fail fast."""
    payload = invoke_request("dead", "echo")
    async with grpc.aio.insecure_channel(address["gateway"]) as channel:
        call = raw_call(channel, GATEWAY_INVOKE)
        details = ""
        for _ in range(5):  # the first failure opens it (failure_threshold: 1)
            try:
                await call(payload, timeout=CALL_TIMEOUT)
            except grpc.aio.AioRpcError as exc:
                details = exc.details() or ""
                if "open" in details:
                    break
        else:
            raise RuntimeError(f"the breaker of 'dead' did not open: {details!r}")
        latencies: list[float] = []
        codes: set[str] = set()
        started = time.perf_counter()
        for _ in range(options.fast_fail_requests):
            began = time.perf_counter()
            try:
                await call(payload, timeout=CALL_TIMEOUT)
            except grpc.aio.AioRpcError as exc:
                codes.add(exc.code().name)
            latencies.append(time.perf_counter() - began)
        sample = summarize(latencies, time.perf_counter() - started)
    return {**asdict(sample), "codes": sorted(codes), "detail": details}


def measure_interceptor(options: Options) -> dict[str, Any]:
    """bench.tracing_cost's configurations: the server interceptor alone, on one hop."""
    results = tracing_cost.run(
        options.interceptor_configs,
        requests=options.interceptor_requests,
        concurrency=16,
        rounds=options.rounds,
    )
    return {"requests": options.interceptor_requests, "concurrency": 16, "results": results}


def memory(meshes: Sequence[LocalMesh]) -> dict[str, float]:
    return {r.spec.name: rss_mb(r.process.pid) for m in meshes for r in m.running}


def ratio(numerator: float, denominator: float) -> float:
    return round(numerator / denominator, 3) if denominator else float("nan")


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each of issue 9's targets with the value this run measured and whether it is met."""
    paths = report["paths"]
    top = str(max(int(c) for c in paths["gateway"]))
    low = str(min(int(c) for c in paths["gateway"]))
    values: dict[str, tuple[float, bool, str]] = {}
    throughput = ratio(paths["gateway"][top]["rps"], paths["baseline"][top]["rps"])
    values["throughput_c64"] = (throughput, throughput >= 0.9, f"x{throughput}")
    p50 = ratio(paths["gateway"][low]["p50_ms"], paths["baseline"][low]["p50_ms"])
    values["p50_c1"] = (p50, p50 <= 1.15, f"x{p50}")
    lost = round(1 - ratio(paths["gateway-traced"][top]["rps"], paths["gateway"][top]["rps"]), 3)
    values["tracing_cost_c64"] = (lost, lost <= 0.15, f"{lost:.1%}")
    widest = report["fanout"]["widths"][str(max(int(w) for w in report["fanout"]["widths"]))]
    values["fanout_16"] = (
        widest["over_one_leg"],
        widest["over_one_leg"] <= 1.2,
        f"x{widest['over_one_leg']}",
    )
    p99 = report["fast_fail"]["p99_ms"]
    values["fast_fail_p99"] = (p99, p99 <= 1.0, f"{p99} ms")
    idle = report["memory"]["idle"]["agent"]
    values["idle_agent_rss"] = (idle, idle <= 60, f"{idle} MB")
    return [
        {"key": key, "what": what, "goal": goal, "value": values[key][0],
         "measured": values[key][2], "met": values[key][1]}
        for key, what, goal in TARGETS
    ]  # fmt: skip


def conditions(options: Options) -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "grpcio": grpc.__version__,
        "protobuf_backend": api_implementation.Type(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_before": [round(v, 2) for v in os.getloadavg()],
        "requests_per_measurement": options.requests,
        "rounds": options.rounds,
        "concurrency": list(options.concurrency),
        "client": "one asyncio process, raw bytes over one channel per path",
    }


async def run_mesh(options: Options, workdir: Path) -> dict[str, Any]:
    ports = free_ports(7)
    config_path = workdir / "gateway.yaml"
    dead = f"{HOST}:{ports[6]}"  # nothing listens there
    config = gateway_config(f"{HOST}:{ports[1]}", dead, max(options.fanout_widths))
    config_path.write_text(yaml.safe_dump(config))
    specs = mesh_specs(ports[:6], config_path)
    logs = workdir / "logs"
    # Agents first; then the gateways at once (each fetches the agents' cards as it starts).
    meshes = [LocalMesh(specs[:3], log_dir=logs, grace_period=2)]
    meshes += [LocalMesh([spec], log_dir=logs, grace_period=2) for spec in specs[3:]]
    try:
        await meshes[0].start()
        await asyncio.gather(*(mesh.start() for mesh in meshes[1:]))
        await asyncio.sleep(options.settle)  # let start-up settle before reading idle memory
        idle = memory(meshes)
        address = {r.spec.name: r.spec.address for m in meshes for r in m.running}
        paths = await measure_paths(address, options)
        fanout = await measure_fanout(address, options)
        fast_fail = await measure_fast_fail(address, options)
        loaded = memory(meshes)
    finally:
        for mesh in reversed(meshes):
            await mesh.stop()
    return {
        "paths": {p: {c: asdict(s) for c, s in by_c.items()} for p, by_c in paths.items()},
        "fanout": fanout,
        "fast_fail": fast_fail,
        "memory": {"idle": idle, "after_load": loaded},
    }


def run(options: Options) -> dict[str, Any]:
    """Every section, one run; returns the report (also written to ``options.out``)."""
    report: dict[str, Any] = {"conditions": conditions(options)}
    with tempfile.TemporaryDirectory(prefix="agentmesh-bench-") as workdir:
        report.update(asyncio.run(run_mesh(options, Path(workdir))))
    report["interceptor"] = measure_interceptor(options)
    report["conditions"]["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    report["ratios"] = ratios(report)
    report["targets"] = targets(report)
    write(report, options.out)
    return report


def ratios(report: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per concurrency: gateway and gateway-traced over baseline, baseline over direct."""
    paths = report["paths"]
    result: dict[str, dict[str, float]] = {}
    for concurrency in paths["gateway"]:
        row = {p: paths[p][concurrency] for p in PATHS}
        result[concurrency] = {
            "gateway_rps_over_baseline": ratio(row["gateway"]["rps"], row["baseline"]["rps"]),
            "gateway_p50_over_baseline": ratio(row["gateway"]["p50_ms"], row["baseline"]["p50_ms"]),
            "gateway_p99_over_baseline": ratio(row["gateway"]["p99_ms"], row["baseline"]["p99_ms"]),
            "traced_rps_over_gateway": ratio(row["gateway-traced"]["rps"], row["gateway"]["rps"]),
            "uvloop_rps_over_gateway": ratio(
                row.get("gateway-uvloop", {}).get("rps", 0.0), row["gateway"]["rps"]
            ),
            "baseline_rps_over_direct": ratio(row["baseline"]["rps"], row["direct"]["rps"]),
        }
    return result


# ------------------------------------------------------------------ output


def markdown(report: dict[str, Any]) -> str:
    c = report["conditions"]
    lines = [
        "# agentmesh benchmark",
        "",
        f"{c['date']}; Python {c['python']}, grpcio {c['grpcio']}, "
        f"protobuf {c['protobuf_backend']}; "
        f"{c['cpus']} CPUs; load average {c['load_average_before'][0]} before, "
        f"{c['load_average_after'][0]} after; {c['requests_per_measurement']} requests per "
        f"measurement, median of {c['rounds']} interleaved rounds.",
        "",
        "## Targets",
        "",
        "| target | goal | measured | met |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {t['what']} | {t['goal']} | {t['measured']} | {'yes' if t['met'] else 'no'} |"
        for t in report["targets"]
    ]
    lines += [
        "",
        "## Paths",
        "",
        "| path | concurrency | req/s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for path, by_c in report["paths"].items():
        for concurrency, s in by_c.items():
            lines.append(f"| {path} | {concurrency} | {s['rps']} | {s['p50_ms']} | {s['p99_ms']} |")
    lines += [
        "",
        "## Ratios",
        "",
        "| concurrency | gateway/baseline req/s | gateway/baseline p50 | gateway/baseline p99 "
        "| traced/untraced req/s | uvloop/asyncio gateway req/s | baseline/direct req/s |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for concurrency, r in report["ratios"].items():
        lines.append(
            f"| {concurrency} | {r['gateway_rps_over_baseline']} "
            f"| {r['gateway_p50_over_baseline']} "
            f"| {r['gateway_p99_over_baseline']} | {r['traced_rps_over_gateway']} "
            f"| {r['uvloop_rps_over_gateway']} "
            f"| {r['baseline_rps_over_direct']} |"
        )
    f = report["fanout"]
    lines += [
        "",
        f"## Fan-out (legs of {f['leg_ms']:g} ms; one leg called directly: "
        f"p50 {f['one_leg_direct']['p50_ms']} ms)",
        "",
        "| width | p50 ms | p99 ms | p50 / one leg |",
        "|---:|---:|---:|---:|",
    ]
    for width, s in f["widths"].items():
        lines.append(f"| {width} | {s['p50_ms']} | {s['p99_ms']} | {s['over_one_leg']} |")
    ff = report["fast_fail"]
    lines += [
        "",
        "## Open-breaker fast-fail",
        "",
        f"{ff['requests']} calls, codes {', '.join(ff['codes'])}: p50 {ff['p50_ms']} ms, "
        f"p99 {ff['p99_ms']} ms (client to gateway and back).",
        "",
        "## Resident memory (MiB)",
        "",
        "| service | idle | after load |",
        "|---|---:|---:|",
    ]
    memory_report = report["memory"]
    for service, idle in memory_report["idle"].items():
        lines.append(f"| {service} | {idle} | {memory_report['after_load'][service]} |")
    i = report["interceptor"]
    lines += [
        "",
        f"## Server interceptor alone ({i['requests']} requests, concurrency {i['concurrency']})",
        "",
        "| configuration | req/s | over bare |",
        "|---|---:|---:|",
    ]
    for config, r in i["results"].items():
        lines.append(f"| {config} | {r['rps']} | {r['ratio_to_bare']} |")
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> bool:
    """Latency against concurrency, p50 and p99 per path; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for name, by_c in report["paths"].items():
        levels = sorted(int(c) for c in by_c)
        p50 = [by_c[str(c)]["p50_ms"] for c in levels]
        p99 = [by_c[str(c)]["p99_ms"] for c in levels]
        (line,) = axes.plot(levels, p50, marker="o", label=f"{name} p50")
        axes.plot(
            levels, p99, marker="x", linestyle="--", color=line.get_color(), label=f"{name} p99"
        )
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xlabel("concurrent requests")
    axes.set_ylabel("latency (ms)")
    axes.set_title("Invoke latency against concurrency (127.0.0.1)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def write(report: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    report["plot"] = "latency.png" if plot(report, out / "latency.png") else None
    (out / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "latest.md").write_text(markdown(report))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("--tiny", action="store_true", help="a handful of requests (a smoke run)")
    parser.add_argument("--requests", type=int, help="calls per measurement")
    parser.add_argument("--rounds", type=int, help="interleaved repetitions")
    parser.add_argument("--concurrency", help="comma-separated levels, e.g. 1,4,16,64")
    parser.add_argument("--out", type=Path, help="directory for latest.json/.md and latency.png")
    args = parser.parse_args(argv)
    options = TINY if args.tiny else Options()
    if args.requests:
        options = replace(options, requests=args.requests, interceptor_requests=args.requests)
    if args.rounds:
        options = replace(options, rounds=args.rounds)
    if args.concurrency:
        levels = tuple(sorted({int(c) for c in args.concurrency.split(",") if c}))
        if not levels or min(levels) < 1:
            parser.error("--concurrency: positive integers, e.g. 1,64")
        options = replace(options, concurrency=levels)
    if args.out:
        options = replace(options, out=args.out)
    report = run(options)
    print(markdown(report))
    print(f"written to {options.out}")
