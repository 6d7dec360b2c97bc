"""``agentmesh up``: the gateway, the reference agents and the project's agents as subprocesses.

Each service runs as ``python -m MODULE`` (or ``python SCRIPT``) with ``--host``
and ``--port`` in its own session (so a terminal's Ctrl-C reaches only the
runner, which then stops the children in order) and, on Linux, with a
parent-death signal so that even a SIGKILLed runner leaves no orphan behind.

The runner supervises: a service that exits is started again on the same port
after a backoff (0.5 s doubling to 30 s, reset once it has run for 10 s), the
event printed, while the gateway routes around it. With ``reload`` a project
agent is restarted when a file it is made of changes (an mtime poll: no
dependency, and cheap for a project's few files).

Every run writes into its own directory under the log root, with ``latest``
pointing at it: one log per service, ``mesh.log`` (the runner's own events),
``gateway.yaml`` (the config the gateway was given) and ``traces.jsonl``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import functools
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.console import Console
from rich.table import Table
from rich.text import Text

from agentmesh.agents import REFERENCE_AGENTS
from agentmesh.cli.project import Project, ProjectError
from agentmesh.cli.state import MeshLock, MeshRunning, MeshState, ServiceState
from agentmesh.cli.trace import record_latest_run
from agentmesh.runtime.ports import free_ports
from agentmesh.telemetry.collector import ReceiverHandle, SpanStore, start_receiver

TRACE_FILE = "traces.jsonl"
EVENTS_FILE = "mesh.log"
GATEWAY_CONFIG_FILE = "gateway.yaml"
LATEST = "latest"
KEEP_RUNS = 20

GATEWAY_MODULE = "agentmesh.gateway"
_PR_SET_PDEATHSIG = 1

RESTART_INITIAL = 0.5
RESTART_MAX = 30.0
STABLE_AFTER = 10.0
RELOAD_POLL = 0.5
_WATCH_LIMIT = 2000
_SKIP_DIRS = frozenset({"__pycache__", "node_modules", "site-packages", "build", "dist"})

EXIT_STARTUP = 1
EXIT_CONFIG = 2
EXIT_PORT_TAKEN = 3


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """One process of the mesh: ``python -m MODULE`` (or ``python MODULE`` for a script)."""

    name: str  # calculator, word-counter, word-counter-2, gateway
    module: str  # a module name, or a script's path with script=True
    host: str
    port: int
    env: Mapping[str, str] = field(default_factory=dict)
    agent: str = ""  # the agent it serves (default: its name; "gateway" for the gateway)
    kind: str = ""  # reference, project or gateway (default: from the module)
    script: bool = False
    cwd: Path | None = None
    args: tuple[str, ...] = ()
    metrics_port: int | None = None
    watch: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        kind = self.kind or ("gateway" if self.module == GATEWAY_MODULE else "reference")
        object.__setattr__(self, "kind", kind)
        object.__setattr__(
            self, "agent", self.agent or ("gateway" if kind == "gateway" else self.name)
        )

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def is_gateway(self) -> bool:
        return self.kind == "gateway"

    @property
    def command(self) -> tuple[str, ...]:
        """What follows the interpreter on the command line."""
        return (self.module,) if self.script else ("-m", self.module)


@dataclass(slots=True)
class RunningService:
    spec: ServiceSpec
    process: asyncio.subprocess.Process
    log_path: Path
    log_file: IO[bytes]
    started_at: float = field(default_factory=time.time)
    started_mono: float = field(default_factory=time.monotonic)
    restarts: int = 0
    reloads: int = 0
    failures: int = 0  # exits in a row without having run STABLE_AFTER seconds
    status: str = "starting"
    reload_reason: str | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class StartupError(RuntimeError):
    pass


class PortTaken(RuntimeError):
    """An address the mesh needs is in use; the message says by whom if known."""


class PlanError(ValueError):
    """The mesh cannot be planned as asked (a bad agent name, a port clash...)."""


# -- planning ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UpOptions:
    """Command-line choices; None leaves the project file's (or the default) value."""

    host: str | None = None
    port: int | None = None
    agent_port_base: int | None = None
    agents: Sequence[str] | None = None
    config: Path | None = None
    workflow_dir: Path | None = None
    log_dir: Path | None = None
    metrics_port: int | None = None
    http_port: int | None = None  # 0: no HTTP port


DEFAULT_GATEWAY_PORT = 50051
DEFAULT_HTTP_PORT = 8080


@dataclass(frozen=True, slots=True)
class MeshPlan:
    specs: list[ServiceSpec]  # agents first, the gateway last
    gateway_config: dict[str, Any]
    log_root: Path
    project: Path | None

    @property
    def gateway(self) -> ServiceSpec:
        return self.specs[-1]


def free_port(host: str) -> int:
    """A port for a service to bind when it starts (see :mod:`agentmesh.runtime.ports`)."""
    return free_ports(1, host)[0]


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _env_name(agent: str) -> str:
    return agent.upper().replace("-", "_")


def default_watch(project: Project, script: Path | None, module: str | None) -> tuple[Path, ...]:
    """What ``--reload`` watches when the project does not say: the agent's own source."""
    if script is not None:
        return (project.path(script).parent,)
    assert module is not None
    base = project.root / Path(*module.split("."))
    if base.is_dir():
        return (base,)
    single = base.with_suffix(".py")
    return (single,) if single.exists() else ()


def plan_mesh(project: Project, options: UpOptions, *, project_file: Path | None) -> MeshPlan:
    """The services to start and the gateway config, from the project and the flags."""
    host = options.host or project.gateway.host
    gateway_port = options.port if options.port is not None else project.gateway.port
    port_base = (
        options.agent_port_base if options.agent_port_base is not None else project.agent_port_base
    )
    reference = project.reference_names()
    known = [*reference, *project.agents]
    if options.agents is not None:
        unknown = [a for a in options.agents if a not in REFERENCE_AGENTS and a not in known]
        if unknown:
            choices = ", ".join([*REFERENCE_AGENTS, *project.agents])
            raise PlanError(f"unknown agent {unknown[0]!r}; choose from {choices}")
        reference = [a for a in options.agents if a in REFERENCE_AGENTS]
        chosen_project = [a for a in options.agents if a in project.agents]
    else:
        chosen_project = list(project.agents)

    specs: list[ServiceSpec] = []
    for i, name in enumerate(reference):
        specs.append(ServiceSpec(name, REFERENCE_AGENTS[name], host, port_base + i))
    for name in chosen_project:
        agent = project.agents[name]
        module = agent.module or str(project.path(agent.script or Path()))
        watch = tuple(project.path(p) for p in agent.watch) or default_watch(
            project, agent.script, agent.module
        )
        env = {key: _scalar(value) for key, value in agent.env.items()}
        # Its handlers reach the mesh (request.mesh) through this gateway.
        gateway_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104
        env.setdefault("AGENTMESH_GATEWAY", f"{gateway_host}:{gateway_port}")
        for replica in range(agent.replicas):
            port = agent.port + replica if agent.port else free_port(host)
            specs.append(
                ServiceSpec(
                    name if agent.replicas == 1 else f"{name}-{replica + 1}",
                    module,
                    host,
                    port,
                    env=env,
                    agent=name,
                    kind="project",
                    script=agent.module is None,
                    cwd=project.root,
                    args=tuple(agent.args),
                    watch=watch,
                )
            )

    config = gateway_config(project, options, specs)
    gateway_env = {
        f"AGENTMESH_AGENT_{_env_name(agent)}_ADDRESSES": ",".join(addresses)
        for agent, addresses in _addresses(specs).items()
    }
    gateway_env.update(project.gateway_env())
    if "AGENTMESH_HTTP_PORT" not in gateway_env:
        # The HTTP port (A2A over HTTP, MCP, the dashboard): 8080 beside the default gateway
        # port; a mesh on another gateway port (a second one, a test's) takes a free one.
        http_port = options.http_port
        if http_port is None:
            default = gateway_port == DEFAULT_GATEWAY_PORT
            http_port = DEFAULT_HTTP_PORT if default else free_port(host)
        if http_port:
            gateway_env["AGENTMESH_HTTP_PORT"] = str(http_port)
    args: list[str] = []
    workflow_dir = options.workflow_dir or (
        project.path(project.workflow_dir) if project.workflow_dir else None
    )
    if workflow_dir is not None:
        if not workflow_dir.is_dir():
            raise PlanError(f"workflow directory {workflow_dir} does not exist")
        args += ["--workflow-dir", str(workflow_dir.resolve())]
    specs.append(
        ServiceSpec("gateway", GATEWAY_MODULE, host, gateway_port, gateway_env, args=tuple(args))
    )
    specs = _with_metrics(specs, options.metrics_port, project.metrics_port)
    ports = [s.port for s in specs] + [s.metrics_port for s in specs if s.metrics_port]
    clash = next((p for p in ports if ports.count(p) > 1), None)
    if clash is not None:
        users = [s.name for s in specs if clash in (s.port, s.metrics_port)]
        raise PlanError(f"port {clash} is given to more than one service: {', '.join(users)}")
    log_root = options.log_dir or project.path(project.log_dir)
    return MeshPlan(specs, config, log_root, project_file)


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _addresses(specs: Iterable[ServiceSpec]) -> dict[str, list[str]]:
    addresses: dict[str, list[str]] = {}
    for spec in specs:
        if not spec.is_gateway:
            addresses.setdefault(spec.agent, []).append(spec.address)
    return addresses


def _with_metrics(
    specs: list[ServiceSpec], flag: int | None, project_port: int | None
) -> list[ServiceSpec]:
    """Each service its own metrics port: the gateway the first, the agents the next."""
    base = flag if flag is not None else project_port
    if base is None:
        inherited = os.environ.get("AGENTMESH_METRICS_PORT", "").strip()
        base = int(inherited) if inherited.isdigit() else None
    if base is None:
        return specs
    ordered = [specs[-1], *specs[:-1]]
    ports = {s.name: (base + i if base else free_port(s.host)) for i, s in enumerate(ordered)}
    return [replace(s, metrics_port=ports[s.name]) for s in specs]


def gateway_config(
    project: Project, options: UpOptions, specs: Sequence[ServiceSpec]
) -> dict[str, Any]:
    """The gateway's config: its file, the inline keys, and the agents this mesh runs."""
    path = options.config or (
        project.path(project.gateway.config) if project.gateway.config else None
    )
    config: dict[str, Any] = {}
    if path is not None:
        from agentmesh.gateway.config import ConfigError, read_config_file

        try:
            config = read_config_file(path)
        except ConfigError as exc:
            raise PlanError(str(exc)) from None
    inline = project.gateway.inline_config()
    agents: dict[str, Any] = {**dict(config.get("agents") or {}), **dict(inline.pop("agents", {}))}
    config.update(inline)
    for name, addresses in _addresses(specs).items():
        entry = dict(agents.get(name) or {})
        entry.pop("address", None)
        if name in project.agents:
            entry.update(project.agents[name].gateway)
        entry["addresses"] = addresses
        agents[name] = entry
    config["agents"] = agents
    return config


def check_gateway_config(config: Mapping[str, Any], path: Path, env: Mapping[str, str]) -> None:
    """Validate the config as the gateway will, before anything starts."""
    from agentmesh.gateway.config import ConfigError, load_config

    path.write_text(yaml.safe_dump(dict(config), sort_keys=False), encoding="utf-8")
    try:
        load_config(path, {**os.environ, **env})
    except ConfigError as exc:
        raise PlanError(str(exc)) from None


# -- ports ---------------------------------------------------------------------


def port_in_use(host: str, port: int) -> bool:
    """Whether something listens on host:port (a probe bind, released at once)."""
    with socket.socket(_family(host)) as sock:
        # As a gRPC server binds: TIME_WAIT leftovers of a stopped mesh do not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False


async def answers_health(address: str, timeout: float = 1.0) -> bool:
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout
            )
        return True
    except grpc.aio.AioRpcError:
        return False


async def check_ports(specs: Sequence[ServiceSpec]) -> None:
    """Refuse at once when an address the mesh needs is taken (PortTaken says which)."""
    gateway = specs[-1]
    if port_in_use(gateway.host, gateway.port):
        if await answers_health(gateway.address):
            raise PortTaken(f"a mesh is already running on {gateway.address}")
        raise PortTaken(
            f"{gateway.address} is in use by another program; choose another gateway --port"
        )
    for spec in specs[:-1]:
        if port_in_use(spec.host, spec.port):
            hint = "--agent-port-base" if spec.kind == "reference" else f"agents.{spec.agent}.port"
            raise PortTaken(
                f"{spec.address} ({spec.name}) is in use by another program; choose another {hint}"
            )
    http = gateway.env.get("AGENTMESH_HTTP_PORT", "")
    if http.isdigit() and int(http) and port_in_use(gateway.host, int(http)):
        raise PortTaken(
            f"HTTP port {gateway.host}:{http} is in use; choose another --http-port (0: none)"
        )
    for spec in specs:
        if spec.metrics_port and port_in_use(spec.host, spec.metrics_port):
            raise PortTaken(
                f"metrics port {spec.host}:{spec.metrics_port} ({spec.name}) is in use; "
                "choose another --metrics-port"
            )


# -- log directories -----------------------------------------------------------


def new_run_dir(root: Path) -> Path:
    """A fresh directory for this run, ``latest`` pointing at it, old runs pruned."""
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run = root / stamp
    suffix = 1
    while run.exists():
        suffix += 1
        run = root / f"{stamp}-{suffix}"
    run.mkdir()
    _point(root / LATEST, run.name)
    # `agentmesh trace` reads LOG_ROOT/traces.jsonl: the latest run's.
    traces = root / TRACE_FILE
    if traces.exists() and not traces.is_symlink():
        traces.replace(root / f"{TRACE_FILE}.old")
    _point(traces, f"{LATEST}/{TRACE_FILE}")
    _prune(root, keep=KEEP_RUNS, current=run)
    return run


def _point(link: Path, target: str) -> None:
    tmp = link.with_name(f".{link.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(target)
    os.replace(tmp, link)


def _prune(root: Path, *, keep: int, current: Path) -> None:
    runs = sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.is_symlink() and p.name[:1].isdigit()),
        key=lambda p: p.name,
    )
    for old in runs[:-keep]:
        if old != current:
            shutil.rmtree(old, ignore_errors=True)


# -- processes -----------------------------------------------------------------


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


def restart_delay(failures: int) -> float:
    """Seconds before restarting a service that has exited ``failures`` times in a row."""
    return min(RESTART_MAX, RESTART_INITIAL * 2.0 ** min(failures, 16))


def _json_line(level: str, message: str, **fields: object) -> bytes:
    now = time.time()
    entry = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z",
        "level": level,
        "service": "mesh",
        "logger": "agentmesh.up",
        "msg": message,
        **fields,
    }
    return (json.dumps(entry) + "\n").encode()


class LocalMesh:
    """Starts, supervises and stops a set of services."""

    def __init__(
        self,
        specs: Sequence[ServiceSpec],
        *,
        log_dir: Path,
        grace_period: float = 5.0,
        startup_timeout: float = 30.0,
        extra_args: Sequence[str] = (),
        on_event: Callable[[str, str], None] | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.specs = list(specs)
        self.log_dir = log_dir
        self.grace_period = grace_period
        self.startup_timeout = startup_timeout
        self.extra_args = list(extra_args)
        self.running: list[RunningService] = []
        self._on_event = on_event
        self._on_change = on_change
        self._stopping = False
        self._stop = asyncio.Event()
        self._events: IO[bytes] | None = None
        self._tasks: list[asyncio.Future[None]] = []

    # events

    def event(self, message: str, level: str = "INFO", **fields: object) -> None:
        if self._events is None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._events = (self.log_dir / EVENTS_FILE).open("ab")
        self._events.write(_json_line(level, message, **fields))
        self._events.flush()
        if self._on_event is not None:
            self._on_event(level, message)

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    # starting

    async def start(self) -> None:
        """Start every service and wait until each reports SERVING."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        agents = [s for s in self.specs if not s.is_gateway]
        for spec in agents:
            self.running.append(await self._spawn(spec))
        self._changed()
        # The gateway fetches cards at start: let the agents come up first.
        await asyncio.gather(*(self._wait_serving(r) for r in self.running))
        for spec in self.specs:
            if spec.is_gateway:
                gateway = await self._spawn(spec)
                self.running.append(gateway)
                await self._wait_serving(gateway)
        for service in self.running:
            service.status = "running"
        self._changed()

    async def _spawn(self, spec: ServiceSpec) -> RunningService:
        log_path = self.log_dir / f"{spec.name}.log"
        log_file = log_path.open("ab")
        return RunningService(spec, await self._exec(spec, log_file), log_path, log_file)

    async def _exec(self, spec: ServiceSpec, log_file: IO[bytes]) -> asyncio.subprocess.Process:
        env = {**os.environ, **spec.env, "PYTHONUNBUFFERED": "1"}
        # One mesh, many services: each names itself in its traces and has its own port.
        env.pop("OTEL_SERVICE_NAME", None)
        env.pop("AGENTMESH_METRICS_PORT", None)
        if spec.metrics_port is not None:
            env["AGENTMESH_METRICS_PORT"] = str(spec.metrics_port)
        if spec.cwd is not None:
            # A project agent's modules import from the project directory.
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(spec.cwd), env.get("PYTHONPATH", "")) if p
            )
        args = [
            sys.executable, *spec.command,
            "--host", spec.host, "--port", str(spec.port),
            "--grace-period", str(self.grace_period),
            *spec.args, *self.extra_args,
        ]  # fmt: skip
        return await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            env=env,
            cwd=spec.cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )

    async def _wait_serving(self, service: RunningService, *, startup: bool = True) -> bool:
        """Wait for SERVING; at startup a failure raises StartupError, later it returns False."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.startup_timeout
        request = health_pb2.HealthCheckRequest(service="")
        process = service.process
        async with grpc.aio.insecure_channel(service.spec.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                if process.returncode is not None:
                    if not startup:
                        return False
                    raise StartupError(
                        f"{service.spec.name} exited with status {process.returncode}; "
                        f"see {service.log_path}:\n{_tail(service.log_path)}"
                    )
                try:
                    reply = await stub.Check(request, timeout=1.0)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return True
                except grpc.aio.AioRpcError:
                    pass
                if loop.time() > give_up:
                    if not startup:
                        return False
                    raise StartupError(
                        f"{service.spec.name} did not report SERVING on {service.spec.address} "
                        f"within {self.startup_timeout:.0f}s; see {service.log_path}"
                    )
                await asyncio.sleep(0.1)

    # supervising

    async def supervise(self, *, reload: bool = False) -> None:
        """Restart services that exit (and reload changed project agents) until stopped."""
        self._tasks = [asyncio.ensure_future(self._keep_running(s)) for s in self.running]
        if reload:
            self._tasks.append(asyncio.ensure_future(self._watch_sources()))
        try:
            await self._stop.wait()
        finally:
            await self._end_supervision()

    async def _end_supervision(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _keep_running(self, service: RunningService) -> None:
        name = service.spec.name
        while True:
            returncode = await service.process.wait()
            if self._stopping:
                return
            if self._take_reload(service):
                delay = 0.0
            else:
                if time.monotonic() - service.started_mono >= STABLE_AFTER:
                    service.failures = 0
                delay = restart_delay(service.failures)
                service.failures += 1
                service.restarts += 1
                # An error exit usually said why last; a signal's victim did not.
                last = _last_line(service.log_path) if returncode > 0 else ""
                self.event(
                    f"{name} exited with status {returncode}"
                    + (f" ({last})" if last else "")
                    + f"; restarting in {delay:.1f}s (restart {service.restarts})",
                    "WARNING",
                    service=name,
                    returncode=returncode,
                )
            service.status = "restarting"
            self._changed()
            service.wake.clear()
            with contextlib.suppress(TimeoutError):
                # A reload request wakes a service waiting out its backoff.
                await asyncio.wait_for(service.wake.wait(), delay)
            self._take_reload(service)  # asked for while it waited out its backoff
            service.process = await self._exec(service.spec, service.log_file)
            service.started_at, service.started_mono = time.time(), time.monotonic()
            service.status = "starting"
            self._changed()
            if await self._wait_serving(service, startup=False):
                service.status = "running"
                self.event(
                    f"{name} is serving again on {service.spec.address} "
                    f"(pid {service.process.pid})",
                    service=name,
                )
                self._changed()

    def _take_reload(self, service: RunningService) -> bool:
        """Whether a reload was asked for (and now counts as done)."""
        reason, service.reload_reason = service.reload_reason, None
        if reason is None:
            return False
        service.reloads += 1
        self.event(f"{service.spec.name} reloading: {reason} changed", service=service.spec.name)
        return True

    async def _watch_sources(self) -> None:
        watched = [s for s in self.running if s.spec.watch]
        by_agent: dict[str, list[RunningService]] = {}
        for service in watched:
            by_agent.setdefault(service.spec.agent, []).append(service)
        snapshots = {agent: _snapshot(group[0].spec.watch) for agent, group in by_agent.items()}
        while True:
            await asyncio.sleep(RELOAD_POLL)
            for agent, group in by_agent.items():
                current = _snapshot(group[0].spec.watch)
                if current == snapshots[agent]:
                    continue
                changed = _first_change(snapshots[agent], current)
                snapshots[agent] = current
                for service in group:
                    self._reload(service, changed)

    def _reload(self, service: RunningService, changed: Path) -> None:
        root = service.spec.cwd
        try:
            shown = str(changed.relative_to(root)) if root else str(changed)
        except ValueError:
            shown = str(changed)
        service.reload_reason = shown
        if service.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                service.process.send_signal(signal.SIGTERM)
        else:
            service.wake.set()

    # stopping

    async def stop(self) -> list[str]:
        """SIGTERM the gateway, then the agents; SIGKILL whatever outlives the grace.

        Returns the names of services that had to be killed.
        """
        self._stopping = True
        self._stop.set()
        await self._end_supervision()  # no restart may race the shutdown
        killed: list[str] = []
        gateway = [r for r in self.running if r.spec.is_gateway]
        agents = [r for r in self.running if not r.spec.is_gateway]
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
                service.status = "stopped"
        for service in self.running:
            service.log_file.close()
        if self._events is not None:
            self._events.close()
            self._events = None
        return killed


def _snapshot(paths: Iterable[Path]) -> dict[Path, float]:
    """Modification times of the files under ``paths`` (Python sources in directories)."""
    seen: dict[Path, float] = {}
    for path in paths:
        if path.is_file():
            with contextlib.suppress(OSError):
                seen[path] = path.stat().st_mtime
            continue
        if not path.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = [d for d in dirnames if not d.startswith(".") and d not in _SKIP_DIRS]
            for filename in filenames:
                if filename.endswith(".py"):
                    file = Path(dirpath) / filename
                    with contextlib.suppress(OSError):
                        seen[file] = file.stat().st_mtime
                if len(seen) >= _WATCH_LIMIT:
                    return seen
    return seen


def _first_change(before: Mapping[Path, float], after: Mapping[Path, float]) -> Path:
    for path in sorted(set(before) | set(after)):
        if before.get(path) != after.get(path):
            return path
    return next(iter(after), Path("?"))


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _last_line(path: Path) -> str:
    """The last line a service wrote, shortened: usually what it died of."""
    for line in reversed(_tail(path, 5).splitlines()):
        line = line.strip()
        if not line:
            continue
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict):
                line = str(entry.get("msg", line))
        return line if len(line) <= 100 else line[:99] + "…"
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


def _error(console: Console, message: str) -> None:
    """An error, on stderr (``console`` is where the rest of the output goes)."""
    Console(stderr=True).print(Text.assemble(("error: ", "red"), message), highlight=False)


def up_table(services: Sequence[RunningService]) -> Table:
    """What runs where; service, address and pid stay whole on an 80-column terminal."""
    metrics = any(s.spec.metrics_port for s in services)
    table = Table(title="agentmesh is up", title_justify="left")
    for column in ("service", "address", "pid"):
        width = max([len(column), *(len(_cell(s, column)) for s in services)])
        table.add_column(column, no_wrap=True, min_width=width)
    if metrics:
        table.add_column("metrics", no_wrap=True)
    table.add_column("runs", overflow="fold")
    for service in services:
        spec = service.spec
        row = [Text(_cell(service, c)) for c in ("service", "address", "pid")]
        if metrics:
            row.append(Text(f":{spec.metrics_port}/metrics" if spec.metrics_port else "-"))
        row.append(Text(spec.module))
        table.add_row(*row)
    return table


def _cell(service: RunningService, column: str) -> str:
    if column == "service":
        return service.spec.name
    if column == "address":
        return service.spec.address
    return str(service.process.pid)


def mesh_state(
    mesh: LocalMesh, plan: MeshPlan, run_dir: Path, traces: Path | None, started_at: float
) -> MeshState:
    return MeshState(
        gateway=plan.gateway.address,
        runner_pid=os.getpid(),
        started_at=started_at,
        log_dir=str(run_dir.resolve()),
        project=str(plan.project.resolve()) if plan.project else None,
        traces=str(traces.resolve()) if traces else None,
        services=[
            ServiceState(
                name=s.spec.name,
                agent=s.spec.agent,
                kind=s.spec.kind,
                address=s.spec.address,
                pid=s.process.pid,
                started_at=s.started_at,
                restarts=s.restarts,
                reloads=s.reloads,
                status=s.status,
                metrics_port=s.spec.metrics_port,
                log=str(s.log_path.resolve()),
            )
            for s in mesh.running
        ],
    )


async def run_up(
    plan: MeshPlan,
    *,
    grace_period: float,
    startup_timeout: float,
    reload: bool,
    console: Console,
) -> int:
    """Run the mesh until SIGINT/SIGTERM; returns an exit status."""
    lock = MeshLock(plan.gateway.address)
    try:
        lock.acquire()
    except MeshRunning as exc:
        where = f" (pid {exc.state.runner_pid}; see agentmesh status)" if exc.state else ""
        _error(console, f"a mesh is already running on {exc.address}{where}")
        return EXIT_PORT_TAKEN
    try:
        return await _run_locked(
            plan,
            lock,
            grace_period=grace_period,
            startup_timeout=startup_timeout,
            reload=reload,
            console=console,
        )
    finally:
        lock.release()


async def _run_locked(
    plan: MeshPlan,
    lock: MeshLock,
    *,
    grace_period: float,
    startup_timeout: float,
    reload: bool,
    console: Console,
) -> int:
    # A bad config is the user's input: said first, whatever the ports (and before a run
    # directory moves the `latest` link).
    try:
        with tempfile.TemporaryDirectory(prefix="agentmesh-config-") as scratch:
            check_gateway_config(
                plan.gateway_config, Path(scratch) / GATEWAY_CONFIG_FILE, plan.gateway.env
            )
    except (PlanError, ProjectError) as exc:
        _error(console, str(exc))
        return EXIT_CONFIG
    try:
        await check_ports(plan.specs)
    except PortTaken as exc:
        _error(console, str(exc))
        return EXIT_PORT_TAKEN
    run_dir = new_run_dir(plan.log_root)
    config_path = run_dir / GATEWAY_CONFIG_FILE
    config_path.write_text(yaml.safe_dump(dict(plan.gateway_config), sort_keys=False), "utf-8")
    specs = [
        replace(s, args=(*s.args, "--config", str(config_path.resolve()))) if s.is_gateway else s
        for s in plan.specs
    ]
    receiver: ReceiverHandle | None = None
    traces = run_dir / TRACE_FILE
    if collects_traces_locally(os.environ):
        receiver = await start_receiver(SpanStore(traces))
        extra = local_tracing_env(receiver.endpoint)
        specs = [replace(spec, env={**spec.env, **extra}) for spec in specs]
        # The gateway's web dashboard (on its HTTP port) reads the same span file.
        shown = {"AGENTMESH_DASHBOARD_TRACES_FILE": str(traces.resolve())}
        specs = [replace(s, env={**s.env, **shown}) if s.is_gateway else s for s in specs]
    record_latest_run(run_dir)  # `agentmesh trace` finds this run from any directory
    started_at = time.time()
    mesh: LocalMesh

    def show(level: str, message: str) -> None:
        colour = {"WARNING": "yellow", "ERROR": "red"}.get(level)
        stamp = time.strftime("%H:%M:%S")
        console.print(
            Text(f"{stamp} ", style="dim") + Text(message, style=colour or ""), highlight=False
        )

    def save() -> None:
        lock.write(mesh_state(mesh, plan, run_dir, traces if receiver else None, started_at))

    mesh = LocalMesh(
        specs,
        log_dir=run_dir,
        grace_period=grace_period,
        startup_timeout=startup_timeout,
        on_event=show,
        on_change=save,
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
            _error(console, str(exc))
            return EXIT_STARTUP
        console.print(up_table(mesh.running))
        http = plan.gateway.env.get("AGENTMESH_HTTP_PORT")
        if http:
            base = f"http://{plan.gateway.host}:{http}"
            console.print(
                f"HTTP: {base} (A2A card /.well-known/agent-card.json, MCP {base}/mcp, "
                f"dashboard {base}/dashboard/)",
                highlight=False,
            )
        latest = plan.log_root / LATEST
        console.print(f"logs: {latest} -> {run_dir.name}   (agentmesh logs [SERVICE] -f)")
        if receiver is not None:
            console.print(f"traces: OTLP on {receiver.address}; show them with: agentmesh trace")
        if reload:
            console.print("reload: project agents restart when their source changes")
        console.print(
            f"gateway: {plan.gateway.address}   try: agentmesh call calculator '2*(3+4)**2'"
            "   stop: Ctrl-C"
        )
        supervising = asyncio.ensure_future(mesh.supervise(reload=reload))
        await asyncio.wait({supervising, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if supervising.done():
            supervising.result()  # an error in the supervisor itself
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
