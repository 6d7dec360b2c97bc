"""``agentmesh breakers`` against a real gateway with one open breaker."""

from __future__ import annotations

import asyncio
import json
import sys

from meshtest import REPO_ROOT, ProbeAgent, free_port, running_agent, service_env
from resiliencetest import gateway_with, request


async def agentmesh(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agentmesh.cli", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        cwd=REPO_ROOT, env=service_env(),
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode or 0, out.decode(), err.decode()


async def test_breakers_shows_open_and_closed_breakers_with_replicas() -> None:
    dead = f"127.0.0.1:{free_port()}"  # nothing listens here
    async with running_agent(ProbeAgent("alpha")) as (_, alive):
        config = {
            "agents": {
                "alpha": {"address": alive, "max_concurrency": 4},
                "gone": {
                    "address": dead,
                    "breaker": {"failure_threshold": 1, "first_probe": 30},
                    "fallback": "alpha",
                },
            }
        }
        async with gateway_with(config) as (_, stub, gateway):
            reply = await stub.Invoke(request("gone"), timeout=5)
            assert reply.agent == "alpha"  # answered by the fallback; the breaker opened
            status, out, err = await agentmesh("breakers", "--gateway", gateway, "--json")
            assert status == 0, err
            status, table, err = await agentmesh("breakers", "--gateway", gateway)
            assert status == 0, err
    rows = {row["agent"]: row for row in json.loads(out)}
    assert rows["gone"]["breaker"] == "open"
    assert rows["gone"]["failures"] == 1
    assert 0 < rows["gone"]["retry_after_seconds"] <= 30
    assert rows["gone"]["fallback"] == "alpha"
    assert rows["gone"]["replicas"][0]["address"] == dead
    assert rows["alpha"]["breaker"] == "closed"
    assert rows["alpha"]["max_concurrency"] == 4
    assert "gone" in table
    assert "open" in table


async def test_breakers_reports_an_unreachable_gateway() -> None:
    status, _, err = await agentmesh("breakers", "--gateway", f"127.0.0.1:{free_port()}")
    assert status == 1
    assert "error: UNAVAILABLE" in err
