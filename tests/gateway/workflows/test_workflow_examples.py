"""The example workflows end to end: through the gateway API and through ``agentmesh run``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import yaml
from meshtest import REPO_ROOT, Mesh, running_mesh, service_env

from agentmesh.agents.calculator.agent import CalculatorAgent
from agentmesh.agents.code_reviewer.agent import CodeReviewerAgent
from agentmesh.agents.keywords.agent import KeywordsAgent
from agentmesh.agents.sentiment.agent import SentimentAgent
from agentmesh.agents.summarizer.agent import SummarizerAgent
from agentmesh.client import AsyncClient, StepFinished, WorkflowFinished

EXAMPLES = REPO_ROOT / "examples"
ARTICLE = EXAMPLES / "inputs" / "article.txt"
RISKY = EXAMPLES / "inputs" / "risky.py"
CLEAN = EXAMPLES / "inputs" / "clean.py"


@contextlib.asynccontextmanager
async def reference_mesh() -> AsyncIterator[Mesh]:
    """The reference agents the examples use, and a gateway declaring every example."""
    agents = (
        SummarizerAgent(),
        SentimentAgent(),
        KeywordsAgent(),
        CodeReviewerAgent(),
        CalculatorAgent(),
    )
    async with running_mesh(*agents, workflow_dir=EXAMPLES) as mesh:
        yield mesh


async def agentmesh(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agentmesh.cli", *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=service_env(COLUMNS="160"),
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_examples_through_the_gateway() -> None:
    report = yaml.safe_load((EXAMPLES / "document-report.yaml").read_text())
    async with reference_mesh() as mesh, AsyncClient(mesh.address) as client:
        events = [e async for e in client.run_workflow(report, ARTICLE.read_text())]
        result = events[-1]
        assert isinstance(result, WorkflowFinished)
        outcomes = {s.step: s.outcome for s in result.steps}
        assert outcomes == dict.fromkeys(
            ("summary", "sentiment", "keywords", "analyse", "report"), "succeeded"
        )
        assert result.data["sentiment"]["label"] == "positive"
        assert result.data["sentences"] == 10
        assert len(result.data["keywords"]) == 8  # max_keywords: 8
        assert result.text.startswith("Summary\n  The city council approved")
        assert "Tone: positive" in result.text

        # Declared by the gateway (workflow_dir), run by name: both branches.
        risky = [e async for e in client.run_workflow("code-review", RISKY.read_text())]
        clean = [
            e
            async for e in client.run_workflow(
                "code-review", CLEAN.read_text(), state={"filename": "clean.py"}
            )
        ]
    risky_steps = {e.step: e.outcome for e in risky if isinstance(e, StepFinished)}
    assert (risky_steps["reject"], risky_steps["score"]) == ("succeeded", "skipped")
    risky_result = risky[-1]
    assert isinstance(risky_result, WorkflowFinished)
    assert risky_result.text.startswith("REJECTED: 3 high-severity finding(s)")
    assert risky_result.data["verdict"] == "rejected"

    clean_steps = {e.step: e.outcome for e in clean if isinstance(e, StepFinished)}
    assert (clean_steps["reject"], clean_steps["score"]) == ("skipped", "succeeded")
    clean_result = clean[-1]
    assert isinstance(clean_result, WorkflowFinished)
    assert clean_result.text == "APPROVED: quality score 90/100 (1 minor finding(s))"
    assert clean_result.data["score"] == 90
    assert clean_result.data["findings"][0]["rule"] == "mutable-default"


async def test_examples_through_the_cli() -> None:
    async with reference_mesh() as mesh:
        gateway = ("--gateway", mesh.address)
        status, out, err = await agentmesh(
            "run", str(EXAMPLES / "document-report.yaml"), "--input", f"@{ARTICLE}", *gateway
        )
        assert status == 0, err
        # The progress table's final state, then the result.
        for row in ("summary", "sentiment", "keywords", "analyse", "report"):
            assert any(line.split()[:3] == ["│", row, "│"] for line in out.splitlines()), row
        assert out.count("✓ succeeded") == 5
        assert "Tone: positive" in out
        assert "completed in" in out

        status, out, err = await agentmesh(
            "run", "code-review", "--input", f"@{RISKY}", "--json", *gateway
        )
        assert status == 0, err
        events = [json.loads(line) for line in out.splitlines()]
        assert next(iter(events[0])) == "started"
        assert next(iter(events[-1])) == "final"
        skipped = [
            e["step_finished"]["step"]
            for e in events
            if e.get("step_finished", {}).get("outcome") == "STEP_OUTCOME_SKIPPED"
        ]
        assert skipped == ["score"]
        final_text = events[-1]["final"]["result"]["artifacts"][0]["parts"][0]["text"]
        assert final_text.startswith("REJECTED")

        status, out, err = await agentmesh(
            "run", "code-review", "--input", f"@{CLEAN}", "-s", "filename=clean.py", *gateway
        )
        assert status == 0, err
        assert "APPROVED: quality score 90/100" in out
        assert "[mutable-default]" in out  # agent output is shown as is, never as markup

        status, out, err = await agentmesh("run", "no-such-workflow", "--input", "x", *gateway)
        assert status == 1
        assert "error: NOT_FOUND: no workflow 'no-such-workflow' is declared" in err
        assert "Traceback" not in err


async def test_gateway_refuses_to_start_with_an_invalid_declared_workflow(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: broken\nsteps:\n  - id: first\n    agent: nobody\n")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agentmesh.gateway", "--port", "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=service_env(AGENTMESH_WORKFLOW_DIR=str(tmp_path)),
    )  # fmt: skip
    try:
        _, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode != 0
    message = err.decode()
    assert f"workflow file {bad}: steps.first.agent: unknown agent 'nobody'" in message
    assert "Traceback" not in message
