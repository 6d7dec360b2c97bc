"""The dashboard's admission and JSON API over HTTP (the browser test drives the pages)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from meshtest import ProbeAgent, running_mesh

from agentmesh.client import CallError
from agentmesh.gateway.auth import hash_key
from agentmesh.gateway.http.dashboard import COOKIE
from agentmesh.telemetry.collector import SpanRecord, SpanStore


async def test_the_dashboard_needs_an_operator_key_or_its_session_cookie(tmp_path: Path) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text(
        f"keys:\n  - id: caller\n    hash: {hash_key('k-caller')}\n"
        "    scopes: {agents: ['*'], skills: ['*'], workflows: ['*']}\n"
        f"  - id: oncall\n    hash: {hash_key('k-oncall')}\n"
        "    scopes: {agents: ['*'], skills: ['*'], workflows: ['*'], operator: true}\n"
    )
    async with running_mesh(
        ProbeAgent("alpha"), auth_required=True, auth_keys_file=keys, http_port=0
    ) as mesh:
        api = f"{mesh.gateway.http_url()}dashboard/api/agents"
        async with httpx.AsyncClient(timeout=10) as http:
            anonymous = await http.get(api)
            caller = await http.get(api, headers={"x-api-key": "k-caller"})
            operator = await http.get(api, headers={"authorization": "Bearer k-oncall"})
            shell = await http.get(f"{mesh.gateway.http_url()}dashboard/")
            refused = await http.post(
                f"{mesh.gateway.http_url()}dashboard/session", data={"key": "k-caller"}
            )
            session = await http.post(
                f"{mesh.gateway.http_url()}dashboard/session", data={"key": "k-oncall"}
            )
            by_cookie = await http.get(api)  # the client keeps the session cookie
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    assert caller.status_code == 403
    assert "no operator" in caller.json()["error"]["message"]
    assert operator.status_code == 200
    assert [a["name"] for a in operator.json()["agents"]] == ["alpha"]
    assert operator.json()["agents"][0]["status"] == "AGENT_STATUS_SERVING"
    assert shell.status_code == 200
    assert "dashboard.js" in shell.text
    assert refused.status_code == 403
    assert session.status_code == 200
    assert "httponly" in session.headers["set-cookie"].lower()
    assert COOKIE in session.headers["set-cookie"]
    assert by_cookie.status_code == 200


async def test_traces_are_filtered_and_bad_filters_get_a_clear_message(tmp_path: Path) -> None:
    traces = tmp_path / "traces.jsonl"

    def span(trace: str, service: str, ms: int, status: str = "UNSET") -> SpanRecord:
        return SpanRecord(trace * 16, trace * 8, "", "agentmesh.v1.Gateway/Invoke", "SERVER",
                          service, 0, ms * 1_000_000, status,
                          attributes={"agentmesh.agent": f"{service}-agent"})  # fmt: skip

    SpanStore(traces).add([span("a1", "gateway", 5), span("b2", "calc", 50, "ERROR")])
    async with running_mesh(ProbeAgent("alpha"), http_port=0, dashboard_traces_file=traces) as mesh:
        api = f"{mesh.gateway.http_url()}dashboard/api/traces"
        async with httpx.AsyncClient(timeout=10) as http:
            everything = (await http.get(api)).json()
            slow = (await http.get(api, params={"min_ms": "20"})).json()
            by_agent = (await http.get(api, params={"agent": "gateway-agent"})).json()
            failed = (await http.get(api, params={"status": "error"})).json()
            bad_status = await http.get(api, params={"status": "meh"})
            bad_ms = await http.get(api, params={"min_ms": "-3"})
            missing = await http.get(f"{api}/ffff")
            bad_state = await http.get(
                f"{mesh.gateway.http_url()}dashboard/api/jobs", params={"state": "nope"}
            )
    assert [t["trace_id"][:2] for t in everything["traces"]] == ["a1", "b2"]
    assert [t["trace_id"][:2] for t in slow["traces"]] == ["b2"]
    assert [t["trace_id"][:2] for t in by_agent["traces"]] == ["a1"]
    assert [t["status"] for t in failed["traces"]] == ["ERROR"]
    assert bad_status.status_code == 400
    assert "status" in bad_status.json()["error"]["message"]
    assert bad_ms.status_code == 400
    assert "min_ms" in bad_ms.json()["error"]["message"]
    assert missing.status_code == 404
    assert bad_state.status_code == 400
    assert "completed" in bad_state.json()["error"]["message"]


async def test_agents_carry_their_recent_calls_error_rate_and_latency() -> None:
    async with running_mesh(ProbeAgent("alpha"), ProbeAgent("beta"), http_port=0) as mesh:
        api = f"{mesh.gateway.http_url()}dashboard/api/agents"
        async with httpx.AsyncClient(timeout=10) as http:
            before = (await http.get(api)).json()
            for n in range(3):
                await mesh.client.invoke("alpha/echo", f"hello {n}")
            for n in range(2):
                with pytest.raises(CallError) as failed:
                    await mesh.client.invoke("alpha/crash", f"boom {n}")
                assert failed.value.code.name == "INTERNAL"
            after = (await http.get(api)).json()
    assert before["window"]["seconds"] == 300
    assert {a["name"]: a["recent"]["calls"] for a in before["agents"]} == {"alpha": 0, "beta": 0}
    assert after["window"]["covered_seconds"] >= before["window"]["covered_seconds"]
    agents = {a["name"]: a for a in after["agents"]}
    alpha, beta = agents["alpha"]["recent"], agents["beta"]["recent"]
    assert alpha["calls"] == 5
    assert alpha["errors"] == 2
    assert alpha["error_rate"] == 0.4
    assert alpha["codes"] == {"OK": 3, "INTERNAL": 2}
    assert (alpha["caller_errors"], alpha["cancelled"], alpha["rejected"]) == (0, 0, 0)
    assert 0 < alpha["p50_ms"] <= alpha["p99_ms"] <= 60_000
    assert alpha["mean_ms"] > 0
    assert agents["alpha"]["status"] == "AGENT_STATUS_SERVING"  # AgentInfo's fields stay
    assert beta == {"calls": 0, "errors": 0, "caller_errors": 0, "cancelled": 0,
                    "rejected": 0, "error_rate": None, "p50_ms": None, "p99_ms": None,
                    "mean_ms": None, "codes": {}}  # fmt: skip


async def test_a_job_event_stream_open_at_shutdown_ends_without_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    agent = ProbeAgent("alpha")
    http = httpx.AsyncClient(timeout=30)
    async with running_mesh(agent, http_port=0) as mesh:
        job = await mesh.client.submit("alpha/hold", "wait")
        await asyncio.wait_for(agent.entered.wait(), 30)
        url = f"{mesh.gateway.http_url()}dashboard/api/jobs/{job.job_id}/events"
        response = await http.send(http.build_request("GET", url), stream=True)
        lines = response.aiter_lines()
        seen = [await anext(lines) for _ in range(3)]  # the SUBMITTED state event
        assert seen[0] == "event: job"
        # The job waits on the agent: the stream waits on its log while the gateway stops.
    with contextlib.suppress(httpx.HTTPError):
        await asyncio.wait_for(_drain(lines), 30)
    await response.aclose()
    await http.aclose()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


async def _drain(lines: AsyncIterator[str]) -> None:
    async for _ in lines:
        pass
