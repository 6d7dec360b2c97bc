"""``agentmesh up``: the gateway and every reference agent as local subprocesses.

Each service runs as ``python -m MODULE --port N`` in its own session (so a
terminal's Ctrl-C reaches only the runner, which then stops the children in
order) and, on Linux, with a parent-death signal so that even a SIGKILLed
runner leaves no orphan behind. Logs go to one file per service.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import functools
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.console import Console
from rich.table import Table

from agentmesh.agents import REFERENCE_AGENTS
from agentmesh.cli.trace import record_latest_run
from agentmesh.telemetry.collector import ReceiverHandle, SpanStore, start_receiver

TRACE_FILE = "traces.jsonl"

GATEWAY_MODULE = "agentmesh.gateway"
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    name: str
    module: str
    host: str
    port: int
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(slots=True)
class RunningService:
    spec: ServiceSpec
    process: asyncio.subprocess.Process
    log_path: Path
    log_file: IO[bytes]


class StartupError(RuntimeError):
    pass


def plan(
    *,
    host: str,
    gateway_port: int,
    agent_port_base: int,
    agents: Sequence[str],
) -> list[ServiceSpec]:
    """The services to start: agents first, then a gateway that knows them."""
    specs = [
        ServiceSpec(name, REFERENCE_AGENTS[name], host, agent_port_base + i)
        for i, name in enumerate(agents)
    ]
    gateway_env = {
        f"AGENTMESH_AGENT_{s.name.upper().replace('-', '_')}_ADDRESSES": s.address for s in specs
    }
    specs.append(ServiceSpec("gateway", GATEWAY_MODULE, host, gateway_port, gateway_env))
    return specs


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")  # runs ldconfig: never in a forked child
    return ctypes.CDLL(name, use_errno=True) if name else None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    # Only a system call here: the parent holds gRPC threads, and a forked
    # child must do as little as possible before exec.
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_LIBC = _libc() if sys.platform.startswith("linux") else None


class LocalMesh:
    """Starts, watches and stops a set of services."""

    def __init__(
        self,
        specs: Sequence[ServiceSpec],
        *,
        log_dir: Path,
        grace_period: float = 5.0,
        startup_timeout: float = 30.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.specs = list(specs)
        self.log_dir = log_dir
        self.grace_period = grace_period
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args)
        self.running: list[RunningService] = []

    async def start(self) -> None:
        """Start every service and wait until each reports SERVING."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for spec in self.specs:
            if spec.module == GATEWAY_MODULE:
                # The gateway fetches cards at start: let the agents come up first.
                await asyncio.gather(*(self._wait_serving(r) for r in self.running))
            self.running.append(await self._spawn(spec))
        await self._wait_serving(self.running[-1])

    async def _spawn(self, spec: ServiceSpec) -> RunningService:
        log_path = self.log_dir / f"{spec.name}.log"
        log_file = log_path.open("ab")
        env = {**os.environ, **spec.env, "PYTHONUNBUFFERED": "1"}
        # One mesh, many services: each names itself in its traces.
        env.pop("OTEL_SERVICE_NAME", None)
        args = [
            sys.executable, "-m", spec.module,
            "--host", spec.host, "--port", str(spec.port),
            "--grace-period", str(self.grace_period),
            *self.extra_args,
        ]  # fmt: skip
        process = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        return RunningService(spec, process, log_path, log_file)

    async def _wait_serving(self, service: RunningService) -> None:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.startup_timeout
        request = health_pb2.HealthCheckRequest(service="")
        async with grpc.aio.insecure_channel(service.spec.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                if service.process.returncode is not None:
                    raise StartupError(
                        f"{service.spec.name} exited with status {service.process.returncode}; "
                        f"see {service.log_path}:\n{_tail(service.log_path)}"
                    )
                try:
                    reply = await stub.Check(request, timeout=1.0)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                if loop.time() > give_up:
                    raise StartupError(
                        f"{service.spec.name} did not report SERVING on {service.spec.address} "
                        f"within {self.startup_timeout:.0f}s; see {service.log_path}"
                    )
                await asyncio.sleep(0.1)

    async def wait_for_exit(self) -> RunningService:
        """Return the first service that exits."""
        waits = {asyncio.ensure_future(r.process.wait()): r for r in self.running}
        done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        return waits[next(iter(done))]

    async def stop(self) -> list[str]:
        """SIGTERM the gateway, then the agents; SIGKILL whatever outlives the grace.

        Returns the names of services that had to be killed.
        """
        killed: list[str] = []
        gateway = [r for r in self.running if r.spec.module == GATEWAY_MODULE]
        agents = [r for r in self.running if r.spec.module != GATEWAY_MODULE]
        for group in (gateway, agents):
            for service in group:
                if service.process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        service.process.send_signal(signal.SIGTERM)
            for service in group:
                try:
                    await asyncio.wait_for(service.process.wait(), self.grace_period + 5.0)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        service.process.kill()
                    await service.process.wait()
                    killed.append(service.spec.name)
        for service in self.running:
            service.log_file.close()
        return killed


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def collects_traces_locally(env: Mapping[str, str]) -> bool:
    """Whether ``agentmesh up`` should receive the spans itself.

    Yes unless the user points the services at their own collector or turns
    tracing off (``OTEL_SDK_DISABLED=true``, ``OTEL_TRACES_EXPORTER=none|console``).
    """
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "").strip().lower() in ("none", "console"):
        return False
    return not (
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def local_tracing_env(endpoint: str) -> dict[str, str]:
    """What points a service at the runner's receiver (exporting every 200 ms, not 5 s)."""
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_BSP_SCHEDULE_DELAY": os.environ.get("OTEL_BSP_SCHEDULE_DELAY", "200"),
    }


def print_table(console: Console, mesh: LocalMesh) -> None:
    table = Table(title="agentmesh is up", title_justify="left")
    for column in ("service", "address", "pid", "log"):
        table.add_column(column)
    for service in mesh.running:
        table.add_row(
            service.spec.name,
            service.spec.address,
            str(service.process.pid),
            str(service.log_path),
        )
    console.print(table)


async def run_up(
    *,
    host: str,
    gateway_port: int,
    agent_port_base: int,
    agents: Sequence[str],
    log_dir: Path,
    grace_period: float,
    startup_timeout: float,
    console: Console,
) -> int:
    """Run the mesh until SIGINT/SIGTERM or until a service dies; returns an exit status."""
    specs = plan(
        host=host, gateway_port=gateway_port, agent_port_base=agent_port_base, agents=agents
    )
    receiver: ReceiverHandle | None = None
    if collects_traces_locally(os.environ):
        receiver = await start_receiver(SpanStore(log_dir / TRACE_FILE))
        extra = local_tracing_env(receiver.endpoint)
        specs = [replace(spec, env={**spec.env, **extra}) for spec in specs]
    record_latest_run(log_dir)  # `agentmesh trace` finds this run from any directory
    mesh = LocalMesh(
        specs,
        log_dir=log_dir,
        grace_period=grace_period,
        startup_timeout=startup_timeout,
    )
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop_requested.set)
    status = 0
    try:
        starting = asyncio.ensure_future(mesh.start())
        stopping = asyncio.ensure_future(stop_requested.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if stopping.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, StartupError):
                await starting
            console.print("stopping before every service came up")
            return 130
        try:
            starting.result()
        except StartupError as exc:
            console.print(f"[red]error:[/red] {exc}")
            return 1
        print_table(console, mesh)
        if receiver is not None:
            console.print(
                f"traces: {log_dir / TRACE_FILE} (OTLP on {receiver.address});"
                " show them with: agentmesh trace"
            )
        console.print(
            f"gateway: {mesh.specs[-1].address}   try: agentmesh call calculator '2*(3+4)**2'"
            "   stop: Ctrl-C"
        )
        exited = asyncio.ensure_future(mesh.wait_for_exit())
        await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if exited.done() and not stopping.done():
            service = exited.result()
            console.print(
                f"[red]error:[/red] {service.spec.name} exited with status "
                f"{service.process.returncode}; see {service.log_path}"
            )
            status = 1
        else:
            exited.cancel()
            status = 0
        stopping.cancel()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        killed = await mesh.stop()
        if killed:
            console.print(f"killed after the grace period: {', '.join(killed)}")
        if receiver is not None:
            # After the services: they flush their last spans as they exit.
            await receiver.stop()
        console.print("all services stopped")
    return status
