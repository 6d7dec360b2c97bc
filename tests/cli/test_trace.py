"""``agentmesh trace``: the waterfall of requests made against ``agentmesh up``."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from meshtest import free_port, free_port_range, service_env
from rich.console import Console

from agentmesh.cli.main import main
from agentmesh.cli.state import state_dir
from agentmesh.cli.trace import (
    find_trace,
    latest_run,
    record_latest_run,
    waterfall,
)
from agentmesh.client import CallError, Client
from agentmesh.telemetry.collector import SpanRecord, SpanStore, read_spans, traces
from agentmesh.telemetry.tracequery import TraceFilter, select


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


def _request(
    trace: str, name: str, ms: float, code: int, *agents: str, failed: bool = False
) -> list[SpanRecord]:
    """A request's spans: the gateway's SERVER span and one child per agent."""
    root = SpanRecord(trace, trace[:16], "", f"agentmesh.v1.Gateway/{name}", "SERVER", "gateway",
                      1_000, 1_000 + int(ms * 1e6), "UNSET",
                      attributes={"rpc.grpc.status_code": code})  # fmt: skip
    children = [
        SpanRecord(trace, f"{i + 1:016x}", root.span_id, "agentmesh.v1.Agent/Invoke", "SERVER",
                   agent, 2_000, 3_000, "ERROR" if failed else "UNSET", "INTERNAL: boom")
        for i, agent in enumerate(agents)
    ]  # fmt: skip
    return [root, *children]


REQUESTS = {
    "ok": _request("a1" * 16, "Invoke", 10, 0, "calculator"),
    "cancelled": _request("b2" * 16, "RunWorkflow", 50, 1, "summarizer", "sentiment"),
    "failed": _request("c3" * 16, "Invoke", 200, 13, "qa", failed=True),
    "refused": _request("d4" * 16, "Invoke", 1, 3, "calculator"),
}


@pytest.mark.parametrize(
    ("wanted", "kept"),
    [
        (TraceFilter(), {"ok", "cancelled", "failed", "refused"}),
        (TraceFilter(service="calculator"), {"ok", "refused"}),
        (TraceFilter(service="sentiment"), {"cancelled"}),
        (TraceFilter(service="nobody"), set()),
        (TraceFilter(status="ok"), {"ok"}),
        (TraceFilter(status="error"), {"failed"}),
        (TraceFilter(status="cancelled"), {"cancelled"}),
        (TraceFilter(status="invalid_argument"), {"refused"}),
        (TraceFilter(min_ms=50), {"cancelled", "failed"}),
        (TraceFilter(min_ms=50.1), {"failed"}),
        (TraceFilter(service="calculator", status="ok", min_ms=5), {"ok"}),
    ],
    ids=lambda v: v.describe() or "none" if isinstance(v, TraceFilter) else None,
)
def test_trace_filters_keep_the_traces_they_name(wanted: TraceFilter, kept: set[str]) -> None:
    grouped = traces(span for spans in REQUESTS.values() for span in spans)
    ids = {spans[0].trace_id: name for name, spans in REQUESTS.items()}
    assert {ids[tid] for tid in select(grouped, wanted)} == kept


def _run_cli(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        main(list(argv))
    captured = capsys.readouterr()
    return int(exited.value.code or 0), captured.out + captured.err


def test_the_trace_command_lists_filtered_traces_with_their_outcome(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "160")
    SpanStore(tmp_path / "traces.jsonl").add([s for spans in REQUESTS.values() for s in spans])
    status, out = _run_cli("trace", "--log-dir", str(tmp_path), capsys=capsys)
    assert status == 0
    rows = {line.split()[0]: line.split()[-1] for line in out.splitlines() if "Gateway/" in line}
    assert rows == {
        "a1a1a1a1a1a1": "OK",
        "b2b2b2b2b2b2": "CANCELLED",
        "c3c3c3c3c3c3": "INTERNAL",
        "d4d4d4d4d4d4": "INVALID_ARGUMENT",
    }
    status, out = _run_cli(
        "trace", "--log-dir", str(tmp_path), "--status", "CANCELLED", "--min-ms", "20",
        capsys=capsys,
    )  # fmt: skip
    assert status == 0
    assert "matching --status cancelled --min-ms 20" in out
    assert [line.split()[0] for line in out.splitlines() if "Gateway/" in line] == ["b2b2b2b2b2b2"]
    status, out = _run_cli(
        "trace", "last", "--log-dir", str(tmp_path), "--service", "qa", capsys=capsys
    )
    assert status == 0
    assert "trace c3c3c3" in out
    assert "INTERNAL: boom" in out
    # A list that the filters leave empty is an answer (status 0); a trace to draw is missing.
    status, out = _run_cli(
        "trace", "--log-dir", str(tmp_path), "--service", "nobody", capsys=capsys
    )
    assert status == 0
    assert "no trace matches --service nobody (4 traces in" in out
    status, out = _run_cli(
        "trace", "last", "--log-dir", str(tmp_path), "--service", "nobody", capsys=capsys
    )
    assert status == 1
    assert "no trace matches --service nobody (4 traces in" in out


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--status", "fine", "'fine' is not a status; use ok, error or a gRPC code name"),
        ("--min-ms", "soon", "'soon' is not a duration in milliseconds"),
        ("--min-ms", "-1", "'-1' is not a duration in milliseconds"),
    ],
)
def test_bad_filter_values_are_named(
    flag: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out = _run_cli("trace", flag, value, capsys=capsys)
    assert status == 2
    assert message in out


def test_the_latest_run_is_recorded_per_user_and_replaced(tmp_path: Path) -> None:
    env = {"AGENTMESH_STATE_DIR": str(tmp_path / "state"), "XDG_STATE_HOME": "/elsewhere"}
    assert state_dir(env) == tmp_path / "state"
    assert state_dir({"XDG_STATE_HOME": str(tmp_path)}) == tmp_path / "agentmesh"
    assert state_dir({"HOME": "/home/x"}).parts[-3:] == (".local", "state", "agentmesh")
    assert latest_run(env) is None
    first, second = tmp_path / "run1", tmp_path / "run2"
    first.mkdir()
    second.mkdir()
    assert record_latest_run(first, env) == tmp_path / "state" / "latest"
    assert latest_run(env) == first.resolve()
    record_latest_run(second, env)
    assert latest_run(env) == second.resolve()
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["latest"]


def test_an_unwritable_state_dir_does_not_stop_a_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert record_latest_run(tmp_path, {"AGENTMESH_STATE_DIR": str(blocker / "state")}) is None
    assert "cannot record the latest run" in caplog.text


@pytest.mark.slow
def test_agentmesh_trace_finds_the_runs_traces_from_anywhere_without_background_work(
    spawn: Callable[..., subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    gateway = f"127.0.0.1:{free_port()}"
    log_dir = tmp_path / "logs"
    env = {k: v for k, v in service_env().items() if not k.startswith("OTEL_")}
    env["AGENTMESH_STATE_DIR"] = str(tmp_path / "state")
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
    # The gateway fetched the agent's card before the mesh was up: had that
    # fetch been traced, its span would have been exported before these.
    with Client(gateway, timeout=10) as client:
        with pytest.raises(CallError, match="INVALID_ARGUMENT"):
            client.invoke("calculator", "6*")
        assert client.invoke("calculator", "6*7").text == "42"

    def both_requests_collected() -> bool:
        grouped = traces(read_spans(log_dir / "traces.jsonl")).values()
        return (
            sum({"gateway", "calculator"} <= {s.service for s in spans} for spans in grouped) == 2
        )

    for _ in range(200):  # services export every 200 ms under `agentmesh up`
        if both_requests_collected():
            break
        time.sleep(0.05)
    assert all("GetCard" not in s.name for s in read_spans(log_dir / "traces.jsonl"))

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def trace(*argv: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "agentmesh.cli", "trace", *argv],
            capture_output=True, text=True, cwd=elsewhere, env={**env, "COLUMNS": "160"},
            check=True,
        ).stdout  # fmt: skip

    shown = trace("last")
    rows = [line.split() for line in shown.splitlines() if "/Invoke" in line]
    assert [(row[0], row[1]) for row in rows] == [
        ("gateway", "Gateway/Invoke"),
        ("gateway", "Agent/Invoke"),
        ("calculator", "Agent/Invoke"),
    ]
    assert "calculator/evaluate" in shown
    listed = [line.split() for line in trace().splitlines() if "Gateway/" in line]
    assert [row[-1] for row in listed] == ["OK", "INVALID_ARGUMENT"]  # newest first
    assert trace("--status", "ok", "--service", "calculator").count("Gateway/Invoke") == 1
    refused = [
        line for line in trace("--status", "invalid_argument").splitlines() if "Gateway/" in line
    ]
    assert [line.split()[0] for line in refused] == [listed[1][0]]
    runner.send_signal(signal.SIGTERM)
    assert runner.wait(timeout=60) == 0
