"""How the CLI behaves at its edges: addresses, closed pipes, JSON, help, narrow terminals."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
from meshtest import REPO_ROOT, ProbeAgent, free_port, running_gateway, running_mesh, service_env
from rich.console import Console
from rich.table import Table

from agentmesh.agents.calculator.agent import CalculatorAgent
from agentmesh.agents.keywords.agent import KeywordsAgent
from agentmesh.agents.sentiment.agent import SentimentAgent
from agentmesh.agents.summarizer.agent import SummarizerAgent
from agentmesh.cli.breakers import breakers_table
from agentmesh.cli.jobs import jobs_table
from agentmesh.cli.main import agents_table, build_parser, integral
from agentmesh.cli.runner import RunningService, ServiceSpec, up_table
from agentmesh.cli.status import status_table
from agentmesh.client import AgentInfo, Job
from agentmesh.runtime import AgentCard, Skill
from agentmesh.v1 import gateway_pb2


async def agentmesh(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agentmesh.cli", *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env or service_env(),
        cwd=REPO_ROOT,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def _closed_pipe(*args: str) -> tuple[int, str]:
    """Run a command whose stdout reader has gone away before it writes a byte."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "agentmesh.cli", *args],
            stdout=write_end, stderr=subprocess.PIPE, env=service_env(), cwd=REPO_ROOT,
            timeout=60, check=False,
        )  # fmt: skip
    finally:
        os.close(write_end)
    return done.returncode, done.stderr.decode()


async def test_a_closed_pipe_ends_quietly() -> None:
    agents = (SummarizerAgent(), SentimentAgent(), KeywordsAgent(), ProbeAgent("probe"))
    async with running_mesh(*agents) as mesh:
        for args in (
            ("run", "examples/document-report.yaml", "-i", "@examples/inputs/article.txt",
             "--json"),
            ("call", "probe/spell", "x" * 2000, "--stream", "--json"),
            ("call", "summarizer", "@README.md"),
        ):  # fmt: skip
            status, err = await asyncio.to_thread(_closed_pipe, *args, "--gateway", mesh.address)
            assert status == 141, err
            assert err == ""  # no BrokenPipeError traceback, nothing at all


async def test_an_unreachable_gateway_gets_a_hint_and_bad_addresses_are_refused() -> None:
    nobody = f"127.0.0.1:{free_port()}"
    status, out, err = await agentmesh("agents", "--gateway", nobody)
    assert status == 1
    assert f"error: UNAVAILABLE: cannot reach the gateway at {nobody}" in err
    assert "hint: is `agentmesh up` running?" in err
    assert "--gateway HOST:PORT or AGENTMESH_GATEWAY" in err
    assert out == ""

    status, out, err = await agentmesh("call", "--gateway", nobody, "calculator", "1", "--json")
    assert status == 1
    error = json.loads(out)["error"]
    assert error["code"] == "UNAVAILABLE"
    assert "is `agentmesh up` running?" in error["hint"]

    for bad, says in (
        ("127.0.0.1", "'127.0.0.1' has no port: give HOST:PORT, e.g. 127.0.0.1:50051"),
        ("http://127.0.0.1:50051", "has a URL scheme: give HOST:PORT"),
        ("localhost:http", "has no port"),
    ):
        status, _, err = await agentmesh("agents", "--gateway", bad)
        assert status == 2, bad
        assert says in err
    status, _, err = await agentmesh("agents", env=service_env(AGENTMESH_GATEWAY="127.0.0.1"))
    assert status == 2
    assert "has no port" in err


async def test_json_keeps_integers_and_reports_errors_as_json() -> None:
    async with running_mesh(CalculatorAgent()) as mesh:
        status, out, _ = await agentmesh("call", "--gateway", mesh.address, "calculator",
                                         "2*(3+4)**2", "--json")  # fmt: skip
        assert status == 0
        assert "98.0" not in out
        parts = json.loads(out)["artifacts"][0]["parts"]
        data = next(p["data"] for p in parts if "data" in p)
        assert 98 in [v for v in data.values() if isinstance(v, int)]

        status, out, err = await agentmesh("call", "--gateway", mesh.address, "calculator",
                                           "1/0", "--json")  # fmt: skip
        assert status == 1
        error = json.loads(out)["error"]
        assert (error["code"], error["message"]) == (
            "INVALID_ARGUMENT",
            "agent 'calculator': expression: division by zero",
        )
        # The rich details travel too: the bad field, named.
        assert error["field_violations"] == [
            {"field": "expression", "description": "division by zero"}
        ]
        assert err == ""

        status, out, _ = await agentmesh(
            "call", "--gateway", mesh.address, "calculator", "@/nonexistent", "--json"
        )
        assert status == 1
        assert "cannot read /nonexistent" in json.loads(out)["error"]["message"]


def test_integral_leaves_fractions_and_big_numbers_alone() -> None:
    assert integral({"a": [1.0, 2.5, {"b": -3.0}], "c": 1e300, "d": True}) == {
        "a": [1, 2.5, {"b": -3}],
        "c": 1e300,
        "d": True,
    }


def test_version() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "agentmesh.cli", "--version"],
        capture_output=True, text=True, check=True, env=service_env(),
    )  # fmt: skip
    assert shown.stdout.strip() == "agentmesh 0.1.0"


def _parsers(
    parser: argparse.ArgumentParser, path: str
) -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _parsers(sub, f"{path} {name}")
    return found


def test_every_option_and_argument_has_help_text() -> None:
    missing = []
    for path, parser in _parsers(build_parser(), "agentmesh"):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def _rendered(table: Table) -> str:
    out = io.StringIO()
    Console(file=out, width=80, color_system=None).print(table)
    lines = out.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80
    return out.getvalue()


def test_tables_keep_their_key_columns_whole_at_80_columns() -> None:
    long = "an agent with a long description that goes on " * 3
    card = AgentCard(
        name="code-reviewer",
        description=long,
        skills=(Skill(id="review"), Skill(id="complexity"), Skill(id="security-smells")),
    )
    agents = [
        AgentInfo("code-reviewer", "unavailable", ("127.0.0.1:50065", "127.0.0.1:50075"), card),
        AgentInfo("summarizer", "serving", ("127.0.0.1:50061",), card),
    ]
    shown = _rendered(agents_table(agents))
    assert "code-reviewer" in shown
    assert "unavailable" in shown

    job_id = "3f9c2a7b1e0d4c6a8b5f2e1d0c9b8a7f"
    job = Job(
        job_id, "working", "workflow", "workflow " + "very-long-name-" * 6,
        grpc.StatusCode.OK, "", time.time(), time.time(), 12, None, gateway_pb2.Job(),
    )  # fmt: skip
    shown = _rendered(jobs_table([job, job]))
    assert job_id in shown
    assert "working" in shown

    rows = [
        {
            "agent": "code-reviewer",
            "status": "not serving",
            "breaker": "half-open",
            "failures": 3,
            "retry_after_seconds": 1.5,
            "in_flight": 2,
            "max_concurrency": 8,
            "fallback": "summarizer-fallback-agent",
            "replicas": [
                {
                    "address": f"127.0.0.1:5006{i}",
                    "ejected": i == 1,
                    "ejected_for_seconds": 2.0,
                    "consecutive_failures": 1,
                    "in_flight": 0,
                }
                for i in range(3)
            ],
        }
    ]
    shown = _rendered(breakers_table(rows))
    for whole in ("code-reviewer", "not serving", "half-open"):
        assert whole in shown

    services = [
        {
            "name": "word-counter-12",
            "pid": 4194301,
            "address": "127.0.0.1:50061",
            "health": "unreachable",
            "uptime_seconds": 7200,
            "restarts": 12,
            "reloads": 3,
            "breaker": "half-open",
            "metrics_port": 9470,
        }
    ]
    shown = _rendered(status_table(services))
    for whole in ("word-counter-12", "4194301", "127.0.0.1:50061", "unreachable"):
        assert whole in shown


async def test_up_table_keeps_service_address_and_pid_whole() -> None:
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await process.wait()
    spec = ServiceSpec(
        "word-counter-2", "/a/very/long/path/to/a/project/directory/agents/wordcount_script.py",
        "127.0.0.1", 50070, agent="word-counter", kind="project", script=True, metrics_port=9465,
    )  # fmt: skip
    service = RunningService(spec, process, Path("x.log"), io.BytesIO())
    shown = _rendered(up_table([service]))
    for whole in ("word-counter-2", "127.0.0.1:50070", str(process.pid), ":9465/metrics"):
        assert whole in shown


async def test_breakers_and_agents_speak_the_same_errors() -> None:
    async with running_gateway({}) as (_, gateway):
        status, out, _ = await agentmesh("breakers", "--gateway", gateway, "--json")
        assert (status, json.loads(out)) == (0, [])
    nobody = f"127.0.0.1:{free_port()}"
    status, _, err = await agentmesh("breakers", "--gateway", nobody)
    assert status == 1
    assert "hint: is `agentmesh up` running?" in err
