"""The benchmark harness runs end to end in its tiny mode and writes every section.

It measures nothing here (a handful of requests); it proves ``python -m bench``
still starts its processes, drives every path and writes its report.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from meshtest import REPO_ROOT, service_env

SECTIONS = (
    "conditions",
    "paths",
    "ratios",
    "fanout",
    "fast_fail",
    "memory",
    "interceptor",
    "targets",
)
PATHS = ("direct", "baseline", "gateway", "gateway-traced") + (
    ("gateway-uvloop",) if importlib.util.find_spec("uvloop") is not None else ()
)


@pytest.mark.slow
def test_tiny_run_writes_every_section(tmp_path: Path) -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "bench", "--tiny", "--out", str(tmp_path)],
        cwd=REPO_ROOT,
        env=service_env(),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    report = json.loads((tmp_path / "latest.json").read_text())
    assert [s for s in SECTIONS if s not in report] == []
    assert sorted(report["paths"]) == sorted(PATHS)
    assert all(sorted(report["paths"][p]) == ["1", "64"] for p in PATHS)
    assert sorted(report["fanout"]["widths"]) == ["1", "16", "4"]
    assert report["fast_fail"]["codes"] == ["UNAVAILABLE"]
    assert sorted(report["memory"]["idle"]) == sorted(["receiver", "agent", "proxy", *PATHS[2:]])
    assert len(report["targets"]) == 6
    table = (tmp_path / "latest.md").read_text()
    headings = [line for line in table.splitlines() if line.startswith("## ")]
    assert len(headings) == 7
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "latency.png").read_bytes().startswith(b"\x89PNG")


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
