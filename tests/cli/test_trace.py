"""``agentmesh trace``: the waterfall of requests made against ``agentmesh up``."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from meshtest import REPO_ROOT, free_port, free_port_range, service_env
from rich.console import Console

from agentmesh.cli.trace import find_trace, waterfall
from agentmesh.client import Client
from agentmesh.telemetry.collector import SpanRecord, read_spans, traces


def _render(renderable: object) -> str:
    console = Console(width=160, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(renderable)
    return console.export_text()


def test_a_waterfall_nests_spans_under_their_parents_and_shows_errors() -> None:
    t = "ab" * 16
    spans = [
        SpanRecord(t, "01" * 8, "", "agentmesh.v1.Gateway/FanOut", "SERVER", "gateway",
                   0, 10_000_000, "UNSET", attributes={"rpc.grpc.status_code": 0}),
        SpanRecord(t, "02" * 8, "01" * 8, "agentmesh.v1.Agent/Invoke", "CLIENT", "gateway",
                   1_000_000, 9_000_000, "ERROR", "INTERNAL: boom"),
        SpanRecord(t, "03" * 8, "02" * 8, "agentmesh.v1.Agent/Invoke", "SERVER", "qa",
                   2_000_000, 8_000_000, "ERROR",
                   attributes={"agentmesh.agent": "qa", "agentmesh.skill": "answer"}),
    ]  # fmt: skip
    found = find_trace(traces(spans), "abab")
    assert isinstance(found, list)
    lines = _render(waterfall(found)).splitlines()
    rows = [line for line in lines if "Gateway/" in line or "Agent/" in line]
    assert [line.split()[0] for line in rows] == ["gateway", "gateway", "qa"]
    assert (
        rows[0].index("Gateway/FanOut")
        < rows[1].index("Agent/Invoke")
        < rows[2].index("Agent/Invoke")
    )
    assert "10.0" in rows[0]
    assert "INTERNAL: boom" in rows[1]
    assert "qa/answer" in rows[2]
    assert (
        find_trace(traces(spans), "cd")
        == "no trace with id 'cd'; `agentmesh trace` lists recent ones"
    )


@pytest.mark.slow
def test_agentmesh_trace_draws_the_last_request_made_against_agentmesh_up(
    spawn: Callable[..., subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    gateway = f"127.0.0.1:{free_port()}"
    log_dir = tmp_path / "logs"
    env = {k: v for k, v in service_env().items() if not k.startswith("OTEL_")}
    runner = spawn(
        "-m", "agentmesh.cli", "up", "--no-file", "--agents", "calculator",
        "--port", gateway.rsplit(":", 1)[1], "--agent-port-base", str(free_port_range(1)),
        "--log-dir", str(log_dir),
        env=env,
    )  # fmt: skip
    assert runner.stdout is not None
    for _ in range(200):  # bounded: the runner prints a table, then waits
        line = runner.stdout.readline()
        if b"agentmesh is up" in line or not line:
            break
    with Client(gateway, timeout=10) as client:
        assert client.invoke("calculator", "6*7").text == "42"

    def last_request_collected() -> bool:
        return any(
            {"gateway", "calculator"} <= {s.service for s in spans}
            for spans in traces(read_spans(log_dir / "traces.jsonl")).values()
        )

    for _ in range(200):  # services export every 200 ms under `agentmesh up`
        if last_request_collected():
            break
        time.sleep(0.05)
    shown = subprocess.run(
        [sys.executable, "-m", "agentmesh.cli", "trace", "last", "--log-dir", str(log_dir)],
        capture_output=True, text=True, cwd=REPO_ROOT, env={**env, "COLUMNS": "160"}, check=True,
    ).stdout  # fmt: skip
    rows = [line.split() for line in shown.splitlines() if "/Invoke" in line]
    assert [(row[0], row[1]) for row in rows] == [
        ("gateway", "Gateway/Invoke"),
        ("gateway", "Agent/Invoke"),
        ("calculator", "Agent/Invoke"),
    ]
    assert "calculator/evaluate" in shown
    listed = subprocess.run(
        [sys.executable, "-m", "agentmesh.cli", "trace", "--log-dir", str(log_dir)],
        capture_output=True, text=True, cwd=REPO_ROOT, env={**env, "COLUMNS": "160"}, check=True,
    ).stdout  # fmt: skip
    assert "Gateway/Invoke" in listed
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(timeout=60) == 0
