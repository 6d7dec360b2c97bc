"""``agentmesh fanout`` and ``agentmesh jobs`` against a real gateway; jobs through the client."""

from __future__ import annotations

import asyncio
import json
import signal
import sys

import yaml
from meshtest import (
    REPO_ROOT,
    ProbeAgent,
    running_agent,
    running_gateway,
    running_mesh,
    service_env,
)

from agentmesh.agents.keywords.agent import KeywordsAgent
from agentmesh.agents.sentiment.agent import SentimentAgent
from agentmesh.agents.summarizer.agent import SummarizerAgent
from agentmesh.client import AsyncClient, CallError, Reply, WorkflowFinished
from agentmesh.runtime import Agent, AgentCard, Request, Result, Skill


class Mirror(Agent):
    """Answers with the options and data it was sent."""

    card = AgentCard(name="mirror", description="test agent", skills=(Skill(id="mirror"),))

    async def invoke(self, request: Request) -> Result:
        return Result.of(data={"options": dict(request.options), "data": request.message.data})


async def agentmesh(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agentmesh.cli", *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=service_env(COLUMNS="200"),
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_fanout_command_shows_legs_and_the_majority() -> None:
    async with (
        running_agent(ProbeAgent("a")) as (_, a),
        running_agent(ProbeAgent("b")) as (_, b),
        running_gateway({"a": [a], "b": [b]}) as (_, gw),
    ):
        status, out, _ = await agentmesh(
            "fanout", "--gateway", gw, "a/echo,b/echo,a/echo,a/crash", "same answer",
            "--aggregate", "majority",
        )  # fmt: skip
        assert status == 0
        assert "3 succeeded, 1 failed" in out
        assert "INTERNAL" in out  # the crashing leg, with its status
        assert "2 of 3 legs agreed" in out  # data {"agent": "a"} twice
        assert out.rstrip().endswith("same answer")

        status, out, _ = await agentmesh(
            "fanout", "--gateway", gw, "a/echo,b/crash", "x", "--policy", "quorum",
            "--quorum", "2", "--json",
        )  # fmt: skip
        response = json.loads(out)
        assert status == 1  # the quorum was not met
        assert response["detail"].startswith("policy not met")
        assert [leg["agent"] for leg in response["legs"]] == ["a", "b"]

        status, _, err = await agentmesh("fanout", "--gateway", gw, "ghost", "x")
        assert status == 1
        assert "NOT_FOUND: targets[0]: agent 'ghost' is not registered" in err


async def test_jobs_commands_submit_watch_list_get_and_cancel() -> None:
    probe = ProbeAgent("probe")
    async with (
        running_agent(probe) as (_, address),
        running_agent(Mirror()) as (_, mirror),
        running_gateway({"probe": [address], "mirror": [mirror]}) as (_, gw),
    ):
        status, out, err = await agentmesh(
            "jobs", "submit", "--gateway", gw, "probe/spell", "abc", "--watch"
        )
        assert status == 0
        assert out.startswith("abc")  # the streamed letters, as they came
        assert err.startswith("job ")  # the id before anything else
        job_id = err.split()[1]
        assert f"job {job_id}  completed" in out
        assert "job completed" in err

        status, out, _ = await agentmesh("jobs", "list", "--gateway", gw, "--json")
        (listed,) = json.loads(out)
        assert listed["state"] == "TASK_STATE_COMPLETED"

        status, out, _ = await agentmesh("jobs", "get", "--gateway", gw, listed["jobId"])
        assert (status, "abc" in out) == (0, True)

        status, out, _ = await agentmesh(
            "jobs", "submit", "--gateway", gw, "probe/hold", "wait", "--json"
        )
        held = json.loads(out)["jobId"]
        await asyncio.wait_for(probe.entered.wait(), 15)
        # Ctrl-C on a watch leaves the job running and says how to resume.
        watcher = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "agentmesh.cli", "jobs", "watch", "--gateway", gw, held,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=service_env(),
        )  # fmt: skip
        assert watcher.stderr is not None
        first = await asyncio.wait_for(watcher.stderr.readline(), 60)
        assert first.startswith(b"[0] job")  # it follows the job's events
        watcher.send_signal(signal.SIGINT)
        _, rest = await asyncio.wait_for(watcher.communicate(), 60)
        assert watcher.returncode == 130
        assert f"Resume with: agentmesh jobs watch {held} --from " in rest.decode()
        assert "Traceback" not in rest.decode()

        status, out, _ = await agentmesh("jobs", "cancel", "--gateway", gw, held)
        assert status == 0  # it ended cancelled
        assert "canceled" in out
        assert "cancelled by request" in out
        await asyncio.wait_for(probe.cancelled.wait(), 15)

        # Nothing left to cancel: said plainly, and not a success.
        status, out, _ = await agentmesh("jobs", "cancel", "--gateway", gw, job_id)
        assert status == 1
        assert f"job {job_id} had already ended (completed): nothing to cancel" in out

        # -o and --data reach the agent as call's do; -q prints the id alone.
        status, out, _ = await agentmesh(
            "jobs", "submit", "--gateway", gw, "mirror", "hi", "-o", "n=1",
            "--data", '{"k": 98}', "-q",
        )  # fmt: skip
        assert status == 0
        (quiet_id,) = out.split()
        status, out, _ = await agentmesh("jobs", "watch", "--gateway", gw, quiet_id)
        assert status == 0
        assert '"n": 1' in out  # integral, as sent
        assert '"k": 98' in out

        status, _, err = await agentmesh("jobs", "get", "--gateway", gw, "nosuchjob")
        assert status == 1
        assert "NOT_FOUND: job 'nosuchjob' does not exist" in err


async def test_workflow_job_through_the_client() -> None:
    report = yaml.safe_load((REPO_ROOT / "examples" / "document-report.yaml").read_text())
    article = (REPO_ROOT / "examples" / "inputs" / "article.txt").read_text()
    agents = (SummarizerAgent(), SentimentAgent(), KeywordsAgent())
    async with running_mesh(*agents) as mesh, AsyncClient(mesh.address) as client:
        job = await client.submit(workflow=report, text=article)
        events = [e async for e in client.watch_job(job.job_id)]
        done = await client.job(job.job_id)
        try:
            await client.job("../x")
        except CallError as exc:
            bad_id = exc
    assert done.state == "completed"
    assert done.kind == "workflow"
    finished = [e.event for e in events if isinstance(e.event, WorkflowFinished)]
    assert len(finished) == 1
    assert isinstance(done.result, Reply)
    assert done.result.text == finished[0].text
    assert bad_id.code.name == "INVALID_ARGUMENT"
