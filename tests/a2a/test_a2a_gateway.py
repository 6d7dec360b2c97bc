"""The gateway as an A2A agent, driven by the official a2a-sdk client over the gRPC binding."""

from __future__ import annotations

from pathlib import Path

import pytest
from a2a.client import ClientCallContext
from a2a.client.errors import A2AClientError
from a2a.types import a2a_pb2 as a2a
from a2a.utils.errors import InvalidParamsError, TaskNotFoundError
from a2atest import a2a_client, a2a_mesh, message, state_of, texts
from meshtest import ProbeAgent, wait_until

from agentmesh.gateway.auth import hash_key


async def test_streamed_message_gives_submitted_working_artifacts_and_completed() -> None:
    async with a2a_mesh(ProbeAgent()) as mesh, a2a_client(mesh.address) as client:
        card = await client.get_extended_agent_card(a2a.GetExtendedAgentCardRequest())
        events = [e async for e in client.send_message(message("abc", skill="probe/spell"))]

    assert {"probe", "probe/spell", "probe/echo"} <= {s.id for s in card.skills}
    states = [s for s in map(state_of, events) if s is not None]
    assert states == [a2a.TASK_STATE_SUBMITTED, a2a.TASK_STATE_WORKING, a2a.TASK_STATE_COMPLETED]
    updates = [e.artifact_update for e in events if e.HasField("artifact_update")]
    chunks = [texts(u.artifact) for u in updates if not u.last_chunk]
    assert "".join(chunks) == "abc"
    assert [texts(u.artifact) for u in updates if u.last_chunk] == ["abc"]
    # Artifact updates come between WORKING and COMPLETED.
    kinds = [e.WhichOneof("payload") for e in events]
    assert kinds[0] == "task"
    assert kinds[-1] == "status_update"


async def test_sent_message_returns_the_completed_task_which_get_and_list_read_back() -> None:
    async with (
        a2a_mesh(ProbeAgent()) as mesh,
        a2a_client(mesh.address, streaming=False) as client,
    ):
        [reply] = [e async for e in client.send_message(message("hello", skill="probe/echo"))]
        task = reply.task
        fetched = await client.get_task(a2a.GetTaskRequest(id=task.id))
        listed = await client.list_tasks(a2a.ListTasksRequest(include_artifacts=True))

    assert task.status.state == a2a.TASK_STATE_COMPLETED
    assert [texts(a) for a in task.artifacts] == ["hello"]
    assert fetched.status.state == a2a.TASK_STATE_COMPLETED
    assert [texts(a) for a in fetched.artifacts] == ["hello"]
    assert [t.id for t in listed.tasks] == [task.id]


async def test_a_resent_message_gets_its_first_task_whatever_deadline_it_carries() -> None:
    async with (
        a2a_mesh(ProbeAgent()) as mesh,
        a2a_client(mesh.address, streaming=False) as client,
    ):
        request = message("hello", skill="probe/echo")
        [first] = [e async for e in client.send_message(request)]  # no deadline
        # A resend carries what is left of its own deadline: the same work, the same task.
        later = ClientCallContext(timeout=30)
        [again] = [e async for e in client.send_message(request, context=later)]
        changed = a2a.SendMessageRequest()
        changed.CopyFrom(request)
        changed.message.parts[0].text = "goodbye"
        with pytest.raises(InvalidParamsError, match="already used for a different request"):
            [e async for e in client.send_message(changed, context=later)]
        listed = await client.list_tasks(a2a.ListTasksRequest())

    assert again.task.id == first.task.id
    assert again.task.status.state == a2a.TASK_STATE_COMPLETED
    assert [t.id for t in listed.tasks] == [first.task.id]


async def test_cancelling_a_running_workflow_task_stops_its_agent_call() -> None:
    probe = ProbeAgent()
    held = {"name": "held", "steps": [{"id": "wait", "agent": "probe", "skill": "hold"}]}
    async with (
        a2a_mesh(probe, workflows={"held": held}) as mesh,
        a2a_client(mesh.address) as client,
    ):
        card = await client.get_extended_agent_card(a2a.GetExtendedAgentCardRequest())
        stream = client.send_message(message("x", skill="workflow:held"))
        first = await anext(stream)
        await wait_until(probe.entered.is_set)
        cancelled = await client.cancel_task(a2a.CancelTaskRequest(id=first.task.id))
        rest = [e async for e in stream]
        await wait_until(probe.cancelled.is_set)

    assert "workflow:held" in {s.id for s in card.skills}
    assert cancelled.status.state == a2a.TASK_STATE_CANCELED
    assert state_of(rest[-1]) == a2a.TASK_STATE_CANCELED


async def test_bad_requests_name_the_problem() -> None:
    async with a2a_mesh(ProbeAgent()) as mesh, a2a_client(mesh.address) as client:
        with pytest.raises(TaskNotFoundError, match="does not exist"):
            await client.get_task(a2a.GetTaskRequest(id="abc123"))
        with pytest.raises(InvalidParamsError, match=r"metadata\.options"):
            [e async for e in client.send_message(message("x", skill="probe/echo", options=3))]
        with pytest.raises(A2AClientError, match=r"NOT_FOUND.*nobody"):
            [e async for e in client.send_message(message("x", agent="nobody"))]


async def test_authentication_and_scopes_apply_to_a2a_calls(tmp_path: Path) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text(
        f"keys:\n  - id: echoer\n    hash: {hash_key('k-echo')}\n"
        "    scopes: {agents: [probe], skills: [echo], workflows: []}\n"
    )
    key = ClientCallContext(service_parameters={"x-api-key": "k-echo"})
    async with (
        a2a_mesh(ProbeAgent(), auth_required=True, auth_keys_file=keys) as mesh,
        a2a_client(mesh.address, streaming=False, context=key) as client,
    ):
        [reply] = [
            e async for e in client.send_message(message("hi", skill="probe/echo"), context=key)
        ]
        with pytest.raises(A2AClientError, match=r"PERMISSION_DENIED.*spell"):
            [e async for e in client.send_message(message("hi", skill="probe/spell"), context=key)]
        with pytest.raises(A2AClientError, match="UNAUTHENTICATED"):
            await client.get_task(a2a.GetTaskRequest(id=reply.task.id))
    assert reply.task.status.state == a2a.TASK_STATE_COMPLETED


async def test_a_keys_max_jobs_limits_its_a2a_tasks(tmp_path: Path) -> None:
    keys = tmp_path / "keys.yaml"
    keys.write_text(
        f"keys:\n  - id: single\n    hash: {hash_key('k-one')}\n    max_jobs: 1\n"
        "    scopes: {agents: [probe], skills: [hold, echo], workflows: []}\n"
    )
    key = ClientCallContext(service_parameters={"x-api-key": "k-one"})
    probe = ProbeAgent()
    async with (
        a2a_mesh(probe, auth_required=True, auth_keys_file=keys) as mesh,
        a2a_client(mesh.address, streaming=False, context=key) as client,
    ):
        held = message("x", skill="probe/hold")
        held.configuration.return_immediately = True
        [first] = [e async for e in client.send_message(held, context=key)]
        await wait_until(probe.entered.is_set)
        with pytest.raises(A2AClientError, match=r"RESOURCE_EXHAUSTED.*max_jobs"):
            [e async for e in client.send_message(message("y", skill="probe/echo"), context=key)]
        await client.cancel_task(a2a.CancelTaskRequest(id=first.task.id), context=key)
        # The held task ended: the key may start another.
        [second] = [
            e async for e in client.send_message(message("z", skill="probe/echo"), context=key)
        ]
    assert second.task.status.state == a2a.TASK_STATE_COMPLETED
