"""Where a running ``agentmesh up`` says what it runs, for other terminals to read.

Each mesh holds an exclusive lock on ``STATE_DIR/mesh-HOST-PORT.lock`` for its
whole life (so a second ``agentmesh up`` on the same gateway address is refused
at once, and a crashed runner's state is known to be stale) and keeps
``mesh-HOST-PORT.json`` up to date: services, pids, ports, start times,
restarts and its log directory. ``agentmesh status`` and ``agentmesh logs``
read it from any directory.

STATE_DIR is ``$AGENTMESH_STATE_DIR``, else ``$XDG_STATE_HOME/agentmesh``, else
``~/.local/state/agentmesh``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from pydantic import BaseModel, ConfigDict, ValidationError

STATE_DIR_ENV = "AGENTMESH_STATE_DIR"


def state_dir(env: Mapping[str, str] | None = None) -> Path:
    """The per-user directory where ``agentmesh up`` records its runs."""
    env = os.environ if env is None else env
    if env.get(STATE_DIR_ENV):
        return Path(env[STATE_DIR_ENV]).expanduser()
    base = env.get("XDG_STATE_HOME") or str(Path("~/.local/state").expanduser())
    return Path(base) / "agentmesh"


def _stem(address: str) -> str:
    return "mesh-" + re.sub(r"[^A-Za-z0-9.]+", "-", address).strip("-")


class ServiceState(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str  # the process: calculator, word-counter-2, gateway
    agent: str  # the agent it serves ("gateway" for the gateway)
    kind: str  # reference, project or gateway
    address: str
    pid: int | None = None
    started_at: float | None = None  # time.time() of the current process's start
    restarts: int = 0
    reloads: int = 0
    status: str = "starting"  # starting, running, restarting, stopped
    metrics_port: int | None = None
    log: str = ""


class MeshState(BaseModel):
    model_config = ConfigDict(extra="ignore")

    gateway: str
    runner_pid: int
    started_at: float
    log_dir: str  # this run's directory
    project: str | None = None
    traces: str | None = None
    services: list[ServiceState]


class MeshRunning(Exception):
    """Another ``agentmesh up`` holds the gateway address."""

    def __init__(self, address: str, state: MeshState | None) -> None:
        super().__init__(address)
        self.address = address
        self.state = state


class MeshLock:
    """The exclusive claim of one gateway address, held while the mesh runs."""

    def __init__(self, address: str, directory: Path | None = None) -> None:
        self.address = address
        self.directory = directory or state_dir()
        self.lock_path = self.directory / f"{_stem(address)}.lock"
        self.state_path = self.directory / f"{_stem(address)}.json"
        self._file: IO[bytes] | None = None

    def acquire(self) -> None:
        """Take the lock; :class:`MeshRunning` when another process holds it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        handle = self.lock_path.open("ab")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise MeshRunning(self.address, _read(self.state_path)) from None
        self._file = handle

    def write(self, state: MeshState) -> None:
        """Replace the state file atomically (readers never see half of it)."""
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".state-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(state.model_dump_json(indent=2))
        os.replace(tmp, self.state_path)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            self.state_path.unlink()
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def _read(path: Path) -> MeshState | None:
    try:
        return MeshState.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValidationError):
        return None


def _held(lock_path: Path) -> bool:
    """Whether a live process holds the lock (a crashed runner's lock is free)."""
    try:
        with lock_path.open("ab") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False
    except OSError:
        return False


def running_meshes(directory: Path | None = None) -> list[MeshState]:
    """The meshes running now on this machine (for this state directory), oldest first."""
    directory = directory or state_dir()
    found = []
    for path in sorted(directory.glob("mesh-*.json")):
        if not _held(path.with_suffix(".lock")):
            continue
        state = _read(path)
        if state is not None:
            found.append(state)
    return sorted(found, key=lambda s: s.started_at)


def find_mesh(gateway: str | None, directory: Path | None = None) -> MeshState | None:
    """The running mesh serving ``gateway``, or (None) the only or newest one."""
    meshes = running_meshes(directory)
    if gateway is not None:
        return next((m for m in meshes if m.gateway == gateway), None)
    return meshes[-1] if meshes else None
