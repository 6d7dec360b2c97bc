"""``agentmesh new agent NAME``: the package it writes passes its own test and runs under ``up``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from meshtest import free_port
from uptest import agentmesh, cli_env, running_up

from agentmesh.cli.project import load_project
from agentmesh.client import Client

pytestmark = pytest.mark.slow


def test_a_scaffolded_agent_passes_its_own_test_and_answers_under_up(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "state")
    project = tmp_path / "project"
    project.mkdir()
    made = agentmesh("new", "agent", "word-stats", cwd=project, env=env)
    assert made.returncode == 0, made.stderr
    package = project / "word_stats"
    assert sorted(p.name for p in package.iterdir()) == [
        "__init__.py",
        "__main__.py",
        "agent.py",
        "test_agent.py",
    ]
    assert load_project(project / "agentmesh.yaml").agents["word-stats"].module == "word_stats"

    # The scaffolded test, run as its author would, in its own interpreter.
    tested = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "word_stats"],
        cwd=project, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "2 passed" in tested.stdout

    port = free_port()
    with running_up(
        ["--agents", "word-stats", "--port", str(port)],
        cwd=project,
        env=env,
        gateway=f"127.0.0.1:{port}",
    ):
        with Client(f"127.0.0.1:{port}", timeout=10) as client:
            reply = client.invoke("word-stats", "the cat and the hat")
    assert reply.text == "5 words, 19 characters"
    assert reply.data == {"words": 5, "characters": 19}


def test_new_agent_keeps_the_project_file_and_refuses_bad_names(tmp_path: Path) -> None:
    env = cli_env(tmp_path / "state")
    (tmp_path / "agentmesh.yaml").write_text(
        "# my mesh\n"
        "reference_agents: [calculator]   # only what I need\n"
        "agents:\n"
        "    mine:                         # four-space indent\n"
        "        script: mine.py\n"
        "workflow_dir: flows\n"
    )
    made = agentmesh("new", "agent", "second-one", cwd=tmp_path, env=env)
    assert made.returncode == 0, made.stderr
    text = (tmp_path / "agentmesh.yaml").read_text()
    assert "# my mesh" in text
    assert "# only what I need" in text
    assert "    second-one:\n        module: second_one\n" in text
    project = load_project(tmp_path / "agentmesh.yaml")
    assert set(project.agents) == {"mine", "second-one"}
    assert project.workflow_dir == Path("flows")

    for name, says in (
        ("Bad_Name", "must be lower-case letters, digits and '-'"),
        ("json", "would make a package 'json' that hides a Python module"),
        ("second-one", "second_one already exists"),
        ("mine", "already has an agent 'mine'"),
    ):
        refused = agentmesh("new", "agent", name, cwd=tmp_path, env=env)
        assert refused.returncode == 2, name
        assert says in refused.stderr
        assert "Traceback" not in refused.stderr
