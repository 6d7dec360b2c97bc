"""``agentmesh up`` as a development loop: a project file, supervision, reload, status, logs."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.request
from pathlib import Path

import pytest
from meshtest import free_port, free_port_range
from uptest import agentmesh, alive, cli_env, running_up

from agentmesh.client import CallError, Client, WorkflowFinished

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc").exists(), reason="reads processes from /proc"),
]

SHOUTER = """\
from __future__ import annotations

from agentmesh.runtime import Agent, AgentCard, Request, Result, Skill, run


class Shouter(Agent):
    card = AgentCard(name="shouter", description="Shouts", skills=(Skill(id="shout"),))

    async def invoke(self, request: Request) -> Result:
        return Result.of(text=request.require_text().upper() + SUFFIX)


SUFFIX = "!"

if __name__ == "__main__":
    run(Shouter())
"""

WORKFLOW = """\
name: loud-sum
steps:
  - id: total
    agent: calculator
    input: ${input.text}
  - id: loud
    agent: shouter
    input: "the total is ${steps.total.output.text}"
"""

GATEWAY_CONFIG = """\
routes:
  - name: shouting
    match: {keywords: [shout]}
    to: {agent: shouter}
"""


def _project(root: Path, *, gateway_port: int, metrics_base: int) -> None:
    (root / "shouter.py").write_text(SHOUTER)
    (root / "workflows").mkdir()
    (root / "workflows" / "loud-sum.yaml").write_text(WORKFLOW)
    (root / "gateway.yaml").write_text(GATEWAY_CONFIG)
    (root / "agentmesh.yaml").write_text(
        f"""\
reference_agents: [calculator]
agent_port_base: {free_port_range(1)}
workflow_dir: workflows
metrics_port: {metrics_base}
agents:
  shouter:
    script: shouter.py
    replicas: 2
    env: {{SHOUTER_MOOD: loud}}
gateway:
  port: {gateway_port}
  config: gateway.yaml
"""
    )


def _status(root: Path, env: dict[str, str]) -> dict[str, dict[str, object]]:
    shown = agentmesh("status", "--json", cwd=root, env=env)
    assert shown.returncode == 0, shown.stderr
    return {s["name"]: s for s in json.loads(shown.stdout)["services"]}


def _answer(client: Client, target: str, text: str) -> str:
    """The reply's text, or the status code's name when the call failed."""
    try:
        return client.invoke(target, text).text
    except CallError as exc:
        return exc.code.name


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def test_up_runs_the_project_supervises_reloads_and_reports(tmp_path: Path) -> None:
    root, state = tmp_path / "project", tmp_path / "state"
    root.mkdir()
    gateway_port, metrics_base = free_port(), free_port_range(4)
    _project(root, gateway_port=gateway_port, metrics_base=metrics_base)
    env = cli_env(state)
    gateway = f"127.0.0.1:{gateway_port}"
    with running_up(["--reload"], cwd=root, env=env, gateway=gateway) as up:
        assert "shouter-1" in up.output
        assert "shouter-2" in up.output
        assert f":{metrics_base}/metrics" in up.output  # per-service metrics ports, printed

        with Client(gateway, timeout=10) as client:
            # The project's agent answers through the gateway, its route from --config too.
            assert client.invoke("shouter", "hi").text == "HI!"
            assert client.invoke(None, "please shout this").text == "PLEASE SHOUT THIS!"
            # The declared workflow runs by name.
            events = list(client.run_workflow("loud-sum", "6*7"))
            finished = [e for e in events if isinstance(e, WorkflowFinished)]
            assert finished[0].text == "THE TOTAL IS 42!"

        services = _status(root, env)
        assert set(services) == {"calculator", "shouter-1", "shouter-2", "gateway"}
        assert {s["health"] for s in services.values()} == {"serving"}
        ports = {s["metrics_port"] for s in services.values()}
        assert ports == set(range(metrics_base, metrics_base + 4))
        assert "agentmesh_rpc" in _metrics(int(str(services["calculator"]["metrics_port"])))

        # A second mesh on the same gateway address is refused at once.
        second = agentmesh("up", "--port", str(gateway_port), cwd=root, env=env)
        assert second.returncode == 3
        assert f"a mesh is already running on {gateway}" in second.stderr
        # ... also when it cannot see the first one's lock (another state directory).
        elsewhere = agentmesh(
            "up", "--no-file", "--port", str(gateway_port), cwd=root, env=cli_env(tmp_path / "x")
        )
        assert elsewhere.returncode == 3
        assert f"a mesh is already running on {gateway}" in elsewhere.stderr

        # SIGKILL one agent: the others keep answering, it is restarted and answers again.
        killed = int(str(services["calculator"]["pid"]))
        os.kill(killed, signal.SIGKILL)
        up.read_until("calculator exited with status -9; restarting in")
        with Client(gateway, timeout=10) as client:
            assert client.invoke("shouter", "still here").text == "STILL HERE!"
        up.read_until("calculator is serving again")
        with Client(gateway, timeout=10) as client:
            answers = [_answer(client, "calculator", "2*(3+4)**2")]
            while answers[-1] == "UNAVAILABLE" and len(answers) < 100:  # bounded reconnect wait
                time.sleep(0.1)
                answers.append(_answer(client, "calculator", "2*(3+4)**2"))
            assert answers[-1] == "98"
            assert set(answers[:-1]) <= {"UNAVAILABLE"}
        services = _status(root, env)
        assert services["calculator"]["restarts"] == 1
        assert services["calculator"]["pid"] != killed
        assert alive(int(str(services["calculator"]["pid"])))

        # --reload: an edited source restarts the agent's replicas with the new code.
        (root / "shouter.py").write_text(SHOUTER.replace('SUFFIX = "!"', 'SUFFIX = "!!"'))
        up.read_until("reloading: shouter.py changed")
        up.read_until("is serving again")
        up.read_until("is serving again")
        with Client(gateway, timeout=10) as client:
            # The gateway follows each replica's health: it skips a replica that said
            # NOT_SERVING (draining) until its re-opened watch says SERVING.
            answers = [_answer(client, "shouter", "hi")]
            while answers[-1] == "UNAVAILABLE" and len(answers) < 100:  # bounded reconnect wait
                time.sleep(0.1)
                answers.append(_answer(client, "shouter", "hi"))
            assert answers[-1] == "HI!!"

        # Logs: one directory per run, the runner's events among the services' records.
        warnings = agentmesh("logs", "--level", "warning", cwd=root, env=env)
        assert warnings.returncode == 0, warnings.stderr
        assert "calculator exited with status -9" in warnings.stdout
        assert " INFO " not in warnings.stdout
        shouter_logs = agentmesh("logs", "shouter", cwd=root, env=env).stdout
        assert "shouter-1" in shouter_logs
        assert "shouter-2" in shouter_logs
        assert "calculator" not in shouter_logs
        runner_pid = up.process.pid
    assert up.process.returncode == 0
    assert "all services stopped" in up.output
    assert not alive(runner_pid)
    latest = root / ".agentmesh" / "logs" / "latest"
    assert latest.is_symlink()
    assert (latest / "shouter-2.log").exists()
    assert (latest / "mesh.log").exists()
    stopped = agentmesh("status", cwd=root, env=env)
    assert stopped.returncode == 1
    assert "no local mesh is running" in stopped.stderr


def test_up_refuses_a_port_another_program_holds_and_a_bad_project_file(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "state")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        taken = agentmesh("up", "--no-file", "--port", str(port), cwd=tmp_path, env=env)
    assert taken.returncode == 3
    assert f"127.0.0.1:{port} is in use by another program" in taken.stderr

    (tmp_path / "agentmesh.yaml").write_text(
        "agents:\n  mine:\n    script: mine.py\n    replica: 2\n"
    )
    bad = agentmesh("up", cwd=tmp_path, env=env)
    assert bad.returncode == 2
    assert "agents.mine.replica: unknown field (expected one of: module, script" in bad.stderr
    assert "Traceback" not in bad.stderr

    (tmp_path / "agentmesh.yaml").write_text(
        "agents:\n  mine:\n    module: mine\n    port: 70000\n"
    )
    bad = agentmesh("up", cwd=tmp_path, env=env)
    assert bad.returncode == 2
    assert "agents.mine.port: Input should be less than or equal to 65535" in bad.stderr

    (tmp_path / "agentmesh.yaml").write_text(
        "gateway:\n  routes:\n    - name: r\n"
        "      match: {keywords: [x]}\n      to: {agent: ghost}\n"
    )
    bad = agentmesh("up", "--port", str(free_port()), cwd=tmp_path, env=env)
    assert bad.returncode == 2
    assert "routes.r.to: agent 'ghost' is not declared under agents" in bad.stderr
