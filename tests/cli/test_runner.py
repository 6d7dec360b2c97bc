"""``agentmesh up`` as a user runs it: a real process tree, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from meshtest import REPO_ROOT, free_port

from agentmesh.agents import REFERENCE_AGENTS
from agentmesh.client import CallError, Client

pytestmark = pytest.mark.slow


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.split(") ", 1)[1][0] != "Z"  # a zombie has exited


def _start_mesh(
    spawn: Callable[..., subprocess.Popen[bytes]], tmp_path: Path
) -> tuple[subprocess.Popen[bytes], str]:
    gateway_port = free_port()
    base = free_port()
    while any(free_port() == base + i for i in range(len(REFERENCE_AGENTS))):
        base = free_port()
    process = spawn(
        "-m", "agentmesh.cli", "up",
        "--port", str(gateway_port),
        "--agent-port-base", str(base),
        "--log-dir", str(tmp_path / "logs"),
    )  # fmt: skip
    assert process.stdout is not None
    output = b""
    for _ in range(200):  # bounded: the runner prints a table then waits
        line = process.stdout.readline()
        output += line
        if b"agentmesh is up" in line:
            return process, f"127.0.0.1:{gateway_port}"
        if not line:
            break
    raise AssertionError(f"mesh did not come up:\n{output.decode(errors='replace')}")


def _wait_gone(pids: list[int]) -> list[int]:
    for _ in range(300):  # up to ~30 s for a graceful drain
        alive = [pid for pid in pids if _alive(pid)]
        if not alive:
            return []
        time.sleep(0.1)
    return alive


@pytest.mark.skipif(not Path("/proc").exists(), reason="reads the process tree from /proc")
def test_up_serves_seven_services_and_sigterm_leaves_no_child(
    spawn: Callable[..., subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    process, gateway = _start_mesh(spawn, tmp_path)
    children = _children(process.pid)
    assert len(children) == 7
    with Client(gateway, timeout=10) as client:
        agents = client.list_agents()
        assert {a.name for a in agents} == set(REFERENCE_AGENTS)
        assert {a.status for a in agents} == {"serving"}
        assert client.invoke("calculator", "2*(3+4)**2").text == "98"
        review = client.invoke("code-reviewer", "import os\nx = eval(input())\n").data
        assert {"rule": "eval-user-input", "severity": "high", "line": 2}.items() <= next(
            f for f in review["findings"] if f["rule"] == "eval-user-input"
        ).items()
        summary = client.invoke("summarizer", (REPO_ROOT / "README.md").read_text())
        assert summary.text
        with pytest.raises(CallError) as info:
            client.invoke("calculator", "1/0")
        assert info.value.code.name == "INVALID_ARGUMENT"
        assert "division by zero" in info.value.message
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    assert _wait_gone(children) == []


@pytest.mark.skipif(not Path("/proc").exists(), reason="reads the process tree from /proc")
def test_a_killed_runner_takes_its_children_with_it(
    spawn: Callable[..., subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    process, _ = _start_mesh(spawn, tmp_path)
    children = _children(process.pid)
    assert len(children) == 7
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    assert _wait_gone(children) == []
