"""The benchmark's pieces that need no process: h2load's framing and report, nginx's
configuration, the profile summary and how targets are judged."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentmesh.v1 import messages_pb2 as pb
from bench import h2load, mesh, native, profile
from bench.common import invoke_request

H2LOAD_REPORT = """\
starting benchmark...
finished in 3.00s, 4525.33 req/s, 626.44KB/s
requests: 13576 total, 13640 started, 13576 done, 13570 succeeded, 4 failed, 2 errored, 0 timeout
status codes: 13576 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 1.84MB (1924414) total, 40.07KB (41028) headers (space savings 96.27%), 1.07MB (1126808) data
                     min         max         mean         sd        +/- sd
time for request:      353us     30.38ms     14.07ms      1.84ms    92.93%
"""  # noqa: E501


def test_a_grpc_frame_is_the_flag_the_big_endian_length_and_the_message() -> None:
    message = invoke_request("bench", "echo")
    framed = h2load.grpc_frame(message)
    assert framed[0] == 0
    assert int.from_bytes(framed[1:5], "big") == len(message)
    assert pb.InvokeRequest.FromString(framed[5:]).skill == "echo"


def test_the_h2load_report_is_read_with_its_units() -> None:
    figures = h2load.parse(H2LOAD_REPORT)
    assert figures == {
        "seconds": 3.0,
        "rps": 4525.33,
        "succeeded": 13570,
        "failed": 6,
        "data_bytes": 1126808,
        "mean_ms": 14.07,
    }
    assert h2load.parse(H2LOAD_REPORT.replace("3.00s,", "863.04ms,"))["seconds"] == pytest.approx(
        0.86304
    )


def test_a_report_without_figures_is_an_error_that_shows_the_output() -> None:
    with pytest.raises(RuntimeError, match=r"(?s)no report.*connection refused"):
        h2load.parse("connect: connection refused\n")


def test_concurrency_is_spread_over_at_most_four_connections() -> None:
    assert (h2load.Load(1).connections, h2load.Load(1).streams) == (1, 1)
    assert (h2load.Load(16).connections, h2load.Load(16).streams) == (4, 4)
    assert (h2load.Load(64).connections, h2load.Load(64).streams) == (4, 16)
    argv = h2load.command(
        "h2load", "http://127.0.0.1:1/x", Path("body.bin"), h2load.Load(64, duration=4),
        headers=(("x-api-key", "k"),),
    )  # fmt: skip
    assert argv[argv.index("-D") + 1] == "4"
    assert "content-type: application/grpc" in argv
    assert "x-api-key: k" in argv
    counted = h2load.command("h2load", "u", Path("b"), h2load.Load(4, requests=50))
    assert counted[counted.index("-n") + 1] == "50"


def test_nginx_runs_in_the_foreground_with_its_files_in_its_own_directory(tmp_path: Path) -> None:
    config = native.nginx_config(tmp_path, 5000, "127.0.0.1:6000")
    assert "daemon off;" in config
    assert f"pid {tmp_path / 'nginx.pid'};" in config
    assert "listen 127.0.0.1:5000 http2;" in config
    assert "server 127.0.0.1:6000;" in config
    assert "grpc_pass grpc://agent;" in config
    assert "/var/" not in config


def test_a_missing_tool_is_named_with_its_package_when_not_installing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(native, "which", lambda command: None)
    tool = native.locate("h2load", install=False)
    assert not tool.found
    assert "nghttp2-client" in tool.reason


RAW_STACKS = """\
<module> (gateway/__main__.py:8);BaseEventLoop.run_forever (asyncio/base_events.py:607);Handle._run (asyncio/events.py:80) 40
<module> (gateway/__main__.py:8);BaseEventLoop.run_forever (asyncio/base_events.py:607);Handle._run (asyncio/events.py:80);serve (telemetry/interceptor.py:212);Invoke (gateway/servicer.py:87) 20
<module> (gateway/__main__.py:8);BaseEventLoop.run_forever (asyncio/base_events.py:607);Handle._run (asyncio/events.py:80);serve (telemetry/interceptor.py:212);UnaryUnaryCall._invoke (grpc/aio/_call.py:595) 10
<module> (gateway/__main__.py:8);BaseEventLoop.run_forever (asyncio/base_events.py:607);EpollSelector.select (selectors.py:468) 10
Thread._bootstrap (threading.py:1002);Thread.run (threading.py:982) 20
"""  # noqa: E501


def test_the_profile_summary_splits_threads_buckets_and_agentmesh_layers() -> None:
    summary = profile.summarize(RAW_STACKS)
    assert summary["samples"] == 100
    assert summary["threads"] == {"event loop": 70.0, "other threads": 20.0,
                                  "idle (epoll wait)": 10.0}  # fmt: skip
    assert summary["buckets"] == {
        profile.C_UNDER_CALLBACK: 40.0,
        "agentmesh": 20.0,
        "grpc-python": 10.0,
    }
    # Inclusive and below the event loop: the process's entry frame is not a layer.
    assert summary["top_agentmesh"] == {
        "serve (telemetry/interceptor.py)": 30.0,
        "Invoke (gateway/servicer.py)": 20.0,
    }


@pytest.mark.parametrize(
    ("value", "goal", "met"),
    [(0.9, ">= 0.90", True), (0.89, ">= 0.90", False), (0.15, "<= 15%", True),
     (0.151, "<= 15%", False), (64.0, "<= 64 KB", True), (1.2, "<= 1 ms", False)],
)  # fmt: skip
def test_a_target_is_met_by_its_operator_and_unit(value: float, goal: str, met: bool) -> None:
    assert mesh.meets(value, goal) is met


def _round(rps: float, hop_cpu: float) -> dict[str, object]:
    return {
        "rps": rps,
        "requests": 1000,
        "client_cpu_ms": 0.0,
        "server_cpu_us_per_request": {"hop": hop_cpu},
    }


def test_two_paths_are_compared_round_by_round() -> None:
    # The machine was fast in the second round and slow in the third, and something
    # disturbed the gateway's first run: round by round the gateway did 0.9 of the proxy
    # twice out of three, where the ratio of the two medians (700 / 1000) says 0.7.
    proxy = {"rounds": [_round(1000, 500), _round(1400, 500), _round(600, 500)]}
    gateway = {"rounds": [_round(700, 625), _round(1260, 625), _round(540, 625)]}
    assert mesh.round_ratios(gateway, proxy, "gateway", "baseline") == (0.9, 0.8)
    assert mesh.round_ratios({}, {}, "gateway", "baseline") is None
