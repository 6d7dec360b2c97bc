"""The benchmark harness runs end to end in its tiny mode and writes every section.

It measures nothing here (a handful of requests); it proves ``python -m bench``
still starts its processes, drives every path and writes its report. h2load
and nginx are used when installed (``.ci/run`` installs them) and otherwise
skipped with the reason recorded; nothing here judges a figure.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from meshtest import REPO_ROOT, service_env

SECTIONS = (
    "conditions",
    "unary",
    "comparisons",
    "fanout",
    "fast_fail",
    "streaming",
    "jobs",
    "open_streams",
    "registry",
    "memory",
    "interceptor",
    "stack",
    "breakdown",
    "targets",
    "skipped",
    "tools",
)
UVLOOP = importlib.util.find_spec("uvloop") is not None
GATEWAYS = ("gateway", "gateway-auth", "gateway-traced", "gateway-traced-10") + (
    ("gateway-uvloop",) if UVLOOP else ()
)
REDIS_GATEWAYS = ("gateway-redis", "gateway-prod")


def _on_path(command: str) -> bool:
    return shutil.which(command) is not None or Path("/usr/sbin", command).exists()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_tiny_run_writes_every_section(tmp_path: Path) -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--out", str(tmp_path)],
        cwd=REPO_ROOT,
        env=service_env(),
        capture_output=True,
        text=True,
        timeout=220,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    report = json.loads((tmp_path / "latest.json").read_text())
    assert [s for s in SECTIONS if s not in report] == []
    assert report["conditions"]["mode"] == "tiny"

    redis = _on_path("redis-server")
    nginx = _on_path("nginx")
    h2load = _on_path("h2load")
    expected = ["direct", "baseline", "parsed-proxy", *(["nginx"] if nginx else []), *GATEWAYS]
    expected += list(REDIS_GATEWAYS) if redis else []
    python = report["unary"]["python"]
    assert sorted(python) == sorted(expected)
    assert all(sorted(python[p]) == ["1", "64"] for p in expected)
    assert all(python[p]["1"]["generator"] == "python" for p in expected)
    if h2load:
        runs = report["unary"]["h2load"]
        assert sorted(runs) == sorted(expected)
        # Every pre-framed h2load call came back as a full gRPC answer.
        assert [p for p in expected if not runs[p]["64"]["valid"]] == []
        assert all(runs[p]["64"]["generator"] == "h2load" for p in expected)
        assert report["streaming"]["h2load"]["gateway"]["valid"]
    else:
        assert "h2load" not in report["unary"]
        assert "h2load" in report["skipped"]
    if not nginx:
        assert "nginx" in report["skipped"]
    for path, floors in report["comparisons"]["throughput"]["over"].items():
        assert sorted(floors) == sorted(f for f in ("direct", "baseline", "nginx") if f in python)
        assert floors["direct"] is not None, path

    assert sorted(report["fanout"]["widths"]) == ["1", "16", "4"]
    assert report["fast_fail"]["gateway"]["codes"] == ["UNAVAILABLE"]
    assert report["fast_fail"]["direct"]["codes"] == ["OK"]
    if redis:
        assert report["fast_fail"]["gateway-prod"]["codes"] == ["UNAVAILABLE"]
        assert report["jobs"]["redis"]["completed"] == report["jobs"]["redis"]["throughput_jobs"]
    assert report["jobs"]["memory"]["completed"] == report["jobs"]["memory"]["throughput_jobs"]
    streams = report["open_streams"]
    assert streams["still_open_when_measured"] == streams["streams"]
    assert report["registry"]["serving"] == report["registry"]["agents"]
    assert set(report["streaming"]["python"]) >= {"direct", "baseline", "gateway"}
    assert "gateway" in report["memory"]["idle"]
    # agentmesh's own handler stack, measured in process: a positive figure per round.
    assert report["stack"]["us_per_call"] > 0
    assert len(report["stack"]["rounds"]) == 1
    if h2load:
        split = report["breakdown"]
        assert split["above_proxy_us"] == round(split["gateway_us"] - split["proxy_us"], 1)
        assert "## Where the gateway's CPU per request goes" in (tmp_path / "latest.md").read_text()
    else:
        assert report["breakdown"] is None

    assert len(report["targets"]) == 11
    assert all(t["generator"] in ("h2load", "python", "") for t in report["targets"])
    table = (tmp_path / "latest.md").read_text()
    for heading in ("## Targets", "## Streaming", "## Open streams", "## Registry", "## Jobs"):
        assert heading in table
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "latency.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow
def test_without_the_native_tools_their_parts_are_skipped_and_named(tmp_path: Path) -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--without", "h2load,nginx,redis-server",
         "--out", str(tmp_path)],
        cwd=REPO_ROOT,
        env=service_env(),
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stderr[-3000:]
    report = json.loads((tmp_path / "latest.json").read_text())
    assert sorted(report["unary"]["python"]) == sorted(
        ["direct", "baseline", "parsed-proxy", *GATEWAYS]
    )
    assert "h2load" not in report["unary"]
    assert "h2load" not in report["streaming"]
    for skipped in ("h2load", "nginx", "redis-server", *REDIS_GATEWAYS):
        assert "--without" in report["skipped"][skipped]
    assert report["jobs"]["redis"] == {"skipped": report["skipped"]["gateway-redis"]}
    # Throughput falls back to the Python client, and says so.
    assert report["comparisons"]["throughput"]["generator"] == "python"
    prod = next(t for t in report["targets"] if t["key"] == "prod_c64")
    assert prod["met"] is None
    assert "h2load is missing" in (tmp_path / "latest.md").read_text()


@pytest.mark.slow
def test_the_a2a_hop_benchmark_measures_both_bindings_both_ways() -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "bench.a2a_hop", "--requests", "5", "--concurrency", "1,2",
         "--rounds", "1"],
        cwd=REPO_ROOT,
        env=service_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert finished.returncode == 0, finished.stderr[-2000:]
    report = json.loads(finished.stdout)
    assert set(report) == {"grpc", "jsonrpc"}
    for binding in report.values():
        assert set(binding) == {"c1", "c2"}
        for row in binding.values():
            assert row["direct"]["requests"] == row["gateway"]["requests"] == 5
            assert row["p50_ratio"] > 0
            assert row["throughput_ratio"] > 0


@pytest.mark.slow
def test_the_worst_case_benchmark_measures_every_reference_agent() -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "bench.agents_worst", "--tiny"],
        cwd=REPO_ROOT,
        env=service_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr[-2000:]
    report = json.loads(finished.stdout)
    assert set(report) == {
        "sentiment", "summarizer", "keywords", "qa", "code-reviewer", "calculator",
    }  # fmt: skip
    for row in report.values():
        assert row["ordinary_s"] > 0
        assert row["worst"] in row["ratios"]
        assert row["worst_ratio"] == max(row["ratios"].values())
