"""``agentmesh up`` as a user runs it: a real process tree, real signals."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from meshtest import REPO_ROOT, free_port, free_port_range

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


@dataclass(frozen=True, slots=True)
class LocalMesh:
    runner: subprocess.Popen[bytes]
    gateway: str
    children: list[int]


@pytest.fixture
def local_mesh(spawn: Callable[..., subprocess.Popen[bytes]], tmp_path: Path) -> LocalMesh:
    """`agentmesh up` on free ports, once it has printed that it is up."""
    gateway_port = free_port()
    process = spawn(
        "-m", "agentmesh.cli", "up", "--no-file",
        "--port", str(gateway_port),
        "--agent-port-base", str(free_port_range(len(REFERENCE_AGENTS))),
        "--log-dir", str(tmp_path / "logs"),
    )  # fmt: skip
    assert process.stdout is not None
    output = b""
    for _ in range(200):  # bounded: the runner prints a table then waits
        line = process.stdout.readline()
        output += line
        if b"agentmesh is up" in line:
            children = _children(process.pid)
            assert len(children) == len(REFERENCE_AGENTS) + 1  # the agents and the gateway
            return LocalMesh(process, f"127.0.0.1:{gateway_port}", children)
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
def test_up_serves_every_service_and_sigterm_leaves_no_child(local_mesh: LocalMesh) -> None:
    with Client(local_mesh.gateway, timeout=10) as client:
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
    local_mesh.runner.send_signal(signal.SIGTERM)
    assert local_mesh.runner.wait(timeout=60) == 0
    assert _wait_gone(local_mesh.children) == []


@pytest.mark.skipif(not Path("/proc").exists(), reason="reads the process tree from /proc")
def test_a_killed_runner_takes_its_children_with_it(local_mesh: LocalMesh) -> None:
    os.kill(local_mesh.runner.pid, signal.SIGKILL)
    local_mesh.runner.wait(timeout=10)
    assert _wait_gone(local_mesh.children) == []
