"""The project file's schema and plan, and ``agentmesh logs`` on a run directory."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from uptest import agentmesh, cli_env

from agentmesh.cli.project import Project, ProjectError, load_project
from agentmesh.cli.runner import PlanError, UpOptions, plan_mesh


def _project(tmp_path: Path, text: str) -> Project:
    path = tmp_path / "agentmesh.yaml"
    path.write_text(text)
    return load_project(path)


def test_the_plan_gives_each_replica_and_metrics_endpoint_its_own_port(tmp_path: Path) -> None:
    (tmp_path / "flows").mkdir()
    project = _project(
        tmp_path,
        """\
reference_agents: [calculator, qa]
agent_port_base: 41000
workflow_dir: flows
metrics_port: 42000
agents:
  mine:
    module: pkg.mine
    port: 43000
    replicas: 2
    env: {MINE_LEVEL: 3, MINE_ON: true}
    gateway: {timeout: 5}
gateway:
  port: 44000
  auth: {required: true, keys_file: keys.yaml}
  settings: {job_workers: 4}
  routes:
    - name: r
      match: {keywords: [mine]}
      to: {agent: mine}
""",
    )
    plan = plan_mesh(project, UpOptions(), project_file=tmp_path / "agentmesh.yaml")
    ports = {s.name: (s.port, s.metrics_port) for s in plan.specs}
    assert ports == {
        "calculator": (41000, 42001),
        "qa": (41001, 42002),
        "mine-1": (43000, 42003),
        "mine-2": (43001, 42004),
        "gateway": (44000, 42000),
    }
    mine = next(s for s in plan.specs if s.name == "mine-1")
    assert mine.command == ("-m", "pkg.mine")
    # A project agent reaches the mesh (request.mesh) through the plan's gateway.
    assert mine.env == {
        "MINE_LEVEL": "3",
        "MINE_ON": "true",
        "AGENTMESH_GATEWAY": "127.0.0.1:44000",
    }
    assert mine.cwd == tmp_path
    assert plan.gateway_config["agents"]["mine"] == {
        "timeout": 5,
        "addresses": ["127.0.0.1:43000", "127.0.0.1:43001"],
    }
    assert plan.gateway_config["routes"][0]["to"] == {"agent": "mine"}
    env = plan.gateway.env
    assert env["AGENTMESH_AUTH_REQUIRED"] == "true"
    assert env["AGENTMESH_AUTH_KEYS_FILE"] == str(tmp_path / "keys.yaml")
    assert env["AGENTMESH_JOB_WORKERS"] == "4"
    assert "--workflow-dir" in plan.gateway.args

    # Flags win over the file.
    plan = plan_mesh(
        project,
        UpOptions(port=45000, agents=["qa", "mine"], metrics_port=None),
        project_file=None,
    )
    assert [s.name for s in plan.specs] == ["qa", "mine-1", "mine-2", "gateway"]
    assert plan.gateway.port == 45000
    with pytest.raises(PlanError, match="unknown agent 'nobody'; choose from"):
        plan_mesh(project, UpOptions(agents=["nobody"]), project_file=None)
    with pytest.raises(PlanError, match="port 41000 is given to more than one service"):
        plan_mesh(project, UpOptions(port=41000), project_file=None)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("agents: [a, b]", "agents: Input should be a valid dictionary"),
        ("agents:\n  x:\n    module: m\n    script: s.py", "agents.x: give module"),
        ("agents:\n  calculator:\n    module: m", "agent name 'calculator' is taken"),
        ("agents:\n  x:\n    module: m\n    gateway: {addresses: [a]}", "agentmesh up sets"),
        ("reference_agents: [calculater]", "unknown reference agent 'calculater'"),
        ("gateway:\n  settings: {port: 1}", "port: set it as gateway.port"),
        ("gateway:\n  settings: {job_wrkers: 1}", "job_wrkers: not a gateway setting"),
        ("gateway:\n  auth: {keys: k}", "gateway.auth.keys: unknown field (expected one of"),
        ("- just\n- a list", "the top level must be a mapping"),
        ("agents: {x: [", "is not valid YAML"),
    ],
)
def test_a_bad_project_file_is_named_with_its_field(tmp_path: Path, text: str, says: str) -> None:
    with pytest.raises(ProjectError) as failed:
        _project(tmp_path, text)
    assert says in str(failed.value)
    assert str(tmp_path / "agentmesh.yaml") in str(failed.value)


def _record(ts: str, level: str, msg: str, **fields: object) -> str:
    return json.dumps({"ts": f"2025-01-01T{ts}Z", "level": level, "msg": msg, **fields})


def test_logs_merges_services_in_time_and_filters(tmp_path: Path) -> None:
    run = tmp_path / "logs" / "20250101-120000"
    run.mkdir(parents=True)
    (tmp_path / "logs" / "latest").symlink_to(run.name)
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    (run / "gateway.log").write_text(
        "\n".join(
            [
                _record("12:00:00.100", "INFO", "serving", address="127.0.0.1:50051"),
                _record("12:00:02.000", "ERROR", "call failed", trace_id=trace),
                "Traceback (most recent call last):",
                '  File "x.py", line 1',
                _record("12:00:03.000", "INFO", "later"),
            ]
        )
        + "\n"
    )
    (run / "mine-1.log").write_text(_record("12:00:01.000", "WARNING", "slow", trace_id=trace))
    (run / "mine-2.log").write_text(_record("12:00:01.500", "INFO", "ok") + "\nplain print\n")
    env = cli_env(tmp_path / "state")

    def logs(*args: str) -> list[str]:
        shown = agentmesh("logs", "--log-dir", str(tmp_path / "logs"), *args, cwd=tmp_path, env=env)
        assert shown.returncode == 0, shown.stderr
        return shown.stdout.splitlines()

    every = logs()
    assert [line.split()[0] for line in every if line[:2] == "12"] == [
        "12:00:00.100",
        "12:00:01.000",
        "12:00:01.500",
        "12:00:02.000",
        "12:00:03.000",
    ]
    assert "address=127.0.0.1:50051" in every[0]
    assert "plain print" in "\n".join(every)  # a non-JSON line follows its record
    errors = logs("--level", "error")
    assert errors[0].split()[1:4] == ["ERROR", "gateway", "call"]
    assert "Traceback (most recent call last):" in errors[1]
    assert len(errors) == 3
    traced = logs("--trace-id", trace[:8])
    assert [line.split()[2] for line in traced if line[:2] == "12"] == ["mine-1", "gateway"]
    mine = logs("mine")
    assert {line.split()[2] for line in mine if line[:2] == "12"} == {"mine-1", "mine-2"}
    assert len(logs("-n", "1")) == 1

    missing = agentmesh("logs", "ghost", "--log-dir", str(tmp_path / "logs"), cwd=tmp_path, env=env)
    assert missing.returncode == 1
    assert "no log of 'ghost'" in missing.stderr
    assert "gateway, mine-1, mine-2" in missing.stderr


def test_metrics_from_the_environment_give_each_service_the_next_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTMESH_METRICS_PORT", "9464")
    project = _project(tmp_path, "reference_agents: [calculator, qa]\n")
    plan = plan_mesh(project, UpOptions(), project_file=None)
    assert {s.name: s.metrics_port for s in plan.specs} == {
        "gateway": 9464,
        "calculator": 9465,
        "qa": 9466,
    }


def test_logs_follow_prints_what_is_written_after_it_started(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "calculator.log").write_text(_record("12:00:00.000", "INFO", "serving") + "\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "agentmesh.cli", "logs", "-f", "--log-dir", str(run)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=cli_env(tmp_path / "state"),
    )  # fmt: skip
    try:
        assert process.stdout is not None
        assert "serving" in process.stdout.readline()
        with (run / "qa.log").open("a") as later:  # a service whose log appears later
            later.write(_record("12:00:05.000", "WARNING", "slow answer") + "\n")
        assert "qa             slow answer" in process.stdout.readline()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
