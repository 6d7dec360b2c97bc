"""``agentmesh agents`` and ``agentmesh call`` against a real gateway."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from meshtest import ProbeAgent, running_agent, running_gateway

from agentmesh.agents.calculator.agent import CalculatorAgent


async def agentmesh(*args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agentmesh.cli", *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(stdin), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_call_list_stream_and_errors(tmp_path: Path) -> None:
    async with (
        running_agent(CalculatorAgent()) as (_, calc),
        running_agent(ProbeAgent("probe")) as (_, probe),
    ):
        async with running_gateway({"calculator": [calc], "probe": [probe]}) as (_, gw):
            status, out, _ = await agentmesh("call", "--gateway", gw, "calculator", "2*(3+4)**2")
            assert (status, out) == (0, "98\n")

            expression = tmp_path / "expr.txt"
            expression.write_text("sqrt(16) + 1")
            status, out, _ = await agentmesh(
                "call", "--gateway", gw, "calculator", f"@{expression}", "--json"
            )
            assert status == 0
            assert json.loads(out)["artifacts"][0]["parts"][0]["text"] == "5"

            status, out, _ = await agentmesh(
                "call", "--gateway", gw, "probe/spell", "-", "--stream", stdin=b"stream me"
            )
            assert (status, out) == (0, "stream me\n")

            status, out, _ = await agentmesh(
                "call", "--gateway", gw, "probe/spell", "ab", "--stream", "--json"
            )
            kinds = [next(iter(json.loads(line))) for line in out.splitlines()]
            assert kinds == ["started", "partial", "partial", "final"]

            status, out, _ = await agentmesh("agents", "--gateway", gw, "--json")
            listed = {a["name"]: a for a in json.loads(out)}
            assert listed["calculator"]["status"] == "serving"
            assert listed["calculator"]["skills"] == ["evaluate", "solve"]
            # The calculator declares that its skill takes no options.
            options = listed["calculator"]["schemas"]["evaluate"]["options"]
            assert options["properties"] == {}
            assert listed["probe"]["schemas"] == {"echo": {}, "hold": {}, "crash": {}, "spell": {}}

            status, out, _ = await agentmesh("agents", "--gateway", gw)
            assert "calculator" in out
            assert "serving" in out

            status, _, err = await agentmesh("call", "--gateway", gw, "nobody", "hi")
            assert status == 1
            assert "error: NOT_FOUND: agent 'nobody' is not registered" in err
            assert "  reason: AGENT_NOT_FOUND" in err
            assert "Traceback" not in err

            status, _, err = await agentmesh("call", "--gateway", gw, "calculator", "@/nonexistent")
            assert status == 1
            assert "cannot read /nonexistent" in err
