"""Native programs the benchmark runs beside the Python services.

* ``h2load`` (Debian ``nghttp2-client``): the load generator for throughput;
* ``nginx`` (Debian ``nginx``): ``grpc_pass`` in front of the agent, the cost
  of one hop done in C;
* ``redis-server`` (Debian ``redis-server``): the shared breaker and job store
  of the production-settings gateways.

:func:`locate` finds each one, installs its package with apt-get when asked
to and running as root, and otherwise says what is missing; a section that
needs a missing tool is skipped with that reason in the report. Every process
started here runs in the foreground under this process, with its files in a
temporary directory, and is stopped by its PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from bench.common import HOST

PACKAGES = {"h2load": "nghttp2-client", "nginx": "nginx", "redis-server": "redis-server"}
SYSTEM_DIRS = ("/usr/sbin", "/sbin", "/usr/local/sbin")  # nginx lives in sbin
APT_LOCK_TIMEOUT = 300  # seconds apt-get waits for another install to finish


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    package: str
    path: str | None
    reason: str = ""  # why it is missing (empty when found)
    installed: bool = False  # installed by this run

    @property
    def found(self) -> bool:
        return self.path is not None

    def describe(self) -> dict[str, str | bool | None]:
        return {
            "path": self.path,
            "package": self.package,
            "installed_by_bench": self.installed,
            "missing": self.reason or None,
        }


def which(command: str) -> str | None:
    path = shutil.which(command)
    if path is None:
        path = shutil.which(command, path=os.pathsep.join(SYSTEM_DIRS))
    return path


def locate(command: str, *, install: bool) -> Tool:
    """``command`` on this machine; with ``install`` (and root), apt-get its package first."""
    package = PACKAGES[command]
    path = which(command)
    if path is not None:
        return Tool(command, package, path)
    hint = f"{command} not found (Debian package {package})"
    if not install:
        return Tool(command, package, None, f"{hint}; not installed in this mode")
    if os.geteuid() != 0:
        return Tool(command, package, None, f"{hint}; run as root, or: apt-get install {package}")
    if which("apt-get") is None:
        return Tool(command, package, None, f"{hint}; no apt-get here to install it")
    problem = _apt_install(package)
    path = which(command)
    if path is None:
        return Tool(command, package, None, f"{hint}; apt-get install failed: {problem}")
    return Tool(command, package, path, installed=True)


def _apt_install(package: str) -> str:
    """apt-get install ``package`` (updating the lists once if the first try fails)."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [
        "apt-get", "-o", f"DPkg::Lock::Timeout={APT_LOCK_TIMEOUT}",
        "install", "-y", "-qq", "--no-install-recommends", package,
    ]  # fmt: skip
    update = ["apt-get", "-o", f"DPkg::Lock::Timeout={APT_LOCK_TIMEOUT}", "update", "-qq"]
    problem = ""
    for steps in ([install], [update, install]):
        for argv in steps:
            done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                said = (done.stderr or done.stdout).strip().splitlines() or ["failed"]
                problem = f"{' '.join(argv[3:])}: {said[-1]}"
                break
        else:
            return ""
    return problem


class NativeProcess:
    """One foreground program started by the bench and stopped by its PID."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None

    def _open_log(self) -> IO[bytes]:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        return self.log_path.open("ab")

    @property
    def pid(self) -> int:
        assert self.process is not None, f"{self.name} is not running"
        return self.process.pid

    async def start(self, ready: Callable[[], Awaitable[bool]], *, timeout: float = 20.0) -> None:
        """Spawn, then wait (bounded) until ``ready()`` says it serves."""
        self._log = self._open_log()
        self.process = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            start_new_session=True,
        )
        loop = asyncio.get_running_loop()
        give_up = loop.time() + timeout
        while not await ready():
            if self.process.returncode is not None:
                raise RuntimeError(
                    f"{self.name} exited with status {self.process.returncode}: {self.tail()}"
                )
            if loop.time() > give_up:
                await self.stop()
                raise RuntimeError(f"{self.name} not ready within {timeout:.0f}s: {self.tail()}")
            await asyncio.sleep(0.05)

    async def stop(self, *, grace: float = 5.0) -> None:
        """SIGTERM by PID; SIGKILL if it outlives ``grace``."""
        process = self.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def tail(self, lines: int = 10) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


async def port_open(port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 0.5)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


# ------------------------------------------------------------------ nginx


def nginx_config(workdir: Path, port: int, upstream: str, *, workers: int = 1) -> str:
    """An nginx.conf: HTTP/2 on ``port``, every call ``grpc_pass``-ed to ``upstream``.

    Its own pid file, error log and temp directories under ``workdir``, no
    daemon, no access log; connections and streams are kept open for the
    whole run (h2load does not reconnect after a GOAWAY).
    """
    forever = "keepalive_requests 10000000; keepalive_timeout 3600s;"
    temp = " ".join(
        f"{kind}_temp_path {workdir / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return "\n".join(
        [
            "daemon off;",
            f"worker_processes {workers};",
            f"pid {workdir / 'nginx.pid'};",
            f"error_log {workdir / 'error.log'} warn;",
            "events { worker_connections 16384; }",
            "http {",
            "  access_log off;",
            f"  {temp}",
            f"  upstream agent {{ server {upstream}; keepalive 256; {forever} }}",
            "  server {",
            f"    listen {HOST}:{port} http2;",
            f"    http2_max_concurrent_streams 1024; {forever}",
            "    location / {",
            "      grpc_pass grpc://agent;",
            "      grpc_read_timeout 3600s; grpc_send_timeout 3600s;",
            "    }",
            "  }",
            "}",
            "",
        ]
    )


def write_nginx_config(workdir: Path, port: int, upstream: str) -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "nginx.conf"
    config.write_text(nginx_config(workdir, port, upstream))
    return config


async def start_nginx(tool: Tool, workdir: Path, port: int, upstream: str) -> NativeProcess:
    """nginx on ``port`` in front of ``upstream``; ready once it accepts connections."""
    assert tool.path is not None
    config = write_nginx_config(workdir, port, upstream)
    process = NativeProcess(
        "nginx",
        [tool.path, "-p", str(workdir), "-c", str(config), "-e", str(workdir / "error.log")],
        workdir / "nginx.log",
    )
    await process.start(lambda: port_open(port))
    return process


# ------------------------------------------------------------------ redis-server


async def start_redis(tool: Tool, workdir: Path, port: int) -> NativeProcess:
    """redis-server on ``port`` without persistence; ready once it answers PING."""
    assert tool.path is not None
    os.makedirs(workdir, exist_ok=True)
    argv = [
        tool.path, "--bind", HOST, "--port", str(port), "--save", "", "--appendonly", "no",
        "--dir", str(workdir), "--daemonize", "no", "--maxclients", "10000",
    ]  # fmt: skip
    process = NativeProcess("redis-server", argv, workdir / "redis.log")

    async def pong() -> bool:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 0.5)
        except (OSError, TimeoutError):
            return False
        try:
            writer.write(b"PING\r\n")
            await writer.drain()
            return (await asyncio.wait_for(reader.readline(), 1.0)).startswith(b"+PONG")
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()

    await process.start(pong)
    return process
