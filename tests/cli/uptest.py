"""Helpers for tests of ``agentmesh up``: the runner as a real subprocess, read line by line."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from meshtest import service_env


def cli_env(state_dir: Path, **extra: str) -> dict[str, str]:
    """A CLI's environment: no inherited AGENTMESH_* or OTEL_*, this test's state directory."""
    env = {k: v for k, v in service_env().items() if not k.startswith("OTEL_")}
    env.update({"AGENTMESH_STATE_DIR": str(state_dir), "COLUMNS": "200", **extra})
    return env


def agentmesh(
    *args: str, cwd: Path, env: dict[str, str], stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run one ``agentmesh`` command to its end."""
    return subprocess.run(
        [sys.executable, "-m", "agentmesh.cli", *args],
        cwd=cwd, env=env, input=stdin, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@dataclass
class Up:
    """A running ``agentmesh up`` and what it has printed so far."""

    process: subprocess.Popen[str]
    gateway: str
    lines: list[str] = field(default_factory=list)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def read_until(self, needle: str, *, limit: int = 500) -> str:
        """Read printed lines until one contains ``needle`` (bounded); returns that line."""
        assert self.process.stdout is not None
        for _ in range(limit):
            line = self.process.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            if needle in line:
                return line
        raise AssertionError(f"never printed {needle!r}; output so far:\n{self.output}")

    def stop(self) -> int:
        """SIGTERM the runner (by PID) and wait for it; returns its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(timeout=60)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.process.stdout is not None:
            self.lines.extend(self.process.stdout.readlines())
            self.process.stdout.close()
        return status


@contextlib.contextmanager
def running_up(
    args: Sequence[str], *, cwd: Path, env: dict[str, str], gateway: str
) -> Iterator[Up]:
    """``agentmesh up ARGS`` until it has printed that it is up; stopped by PID afterwards."""
    process = subprocess.Popen(
        [sys.executable, "-m", "agentmesh.cli", "up", *args],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    up = Up(process, gateway)
    try:
        up.read_until("agentmesh is up")
        up.read_until("stop: Ctrl-C")  # the last line printed once up
        yield up
    finally:
        up.stop()


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        with contextlib.suppress(OSError):
            os.kill(pid, 0)
            return True
        return False
    return stat.split(") ", 1)[1][0] != "Z"  # a zombie has exited
