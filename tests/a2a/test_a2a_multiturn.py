"""A2A multi-turn tasks through the official a2a-sdk client: a task whose agent asks a
question stops in TASK_STATE_INPUT_REQUIRED with the question as its status message, and a
follow-up message naming the task id answers it; a finished task refuses one."""

from __future__ import annotations

import uuid

import pytest
from a2a.types import a2a_pb2 as a2a
from a2atest import a2a_client, a2a_mesh, message

from agentmesh.agents.calculator.agent import CalculatorAgent
from agentmesh.runtime.wire import struct_to_dict


def follow_up(task: a2a.Task, text: str) -> a2a.SendMessageRequest:
    return a2a.SendMessageRequest(
        message=a2a.Message(
            message_id=uuid.uuid4().hex,
            role=a2a.ROLE_USER,
            task_id=task.id,
            context_id=task.context_id,
            parts=[a2a.Part(text=text)],
        )
    )


async def test_a_blocking_task_stops_at_its_question_and_the_follow_up_completes_it() -> None:
    async with (
        a2a_mesh(CalculatorAgent()) as mesh,
        a2a_client(mesh.address, streaming=False) as client,
    ):
        [asked] = [e async for e in client.send_message(message("x * 3", skill="calculator/solve"))]
        fetched = await client.get_task(a2a.GetTaskRequest(id=asked.task.id))
        [done] = [e async for e in client.send_message(follow_up(asked.task, "7"))]
        with pytest.raises(Exception, match="COMPLETED") as refused:
            [e async for e in client.send_message(follow_up(asked.task, "8"))]

    task = asked.task
    assert task.status.state == a2a.TASK_STATE_INPUT_REQUIRED
    question = task.status.message
    assert question.role == a2a.ROLE_AGENT
    assert question.parts[0].text == "What is x?"
    assert struct_to_dict(question.parts[1].data.struct_value) == {
        "variable": "x",
        "expression": "x * 3",
    }
    assert fetched.status.state == a2a.TASK_STATE_INPUT_REQUIRED
    assert fetched.status.message.parts[0].text == "What is x?"
    assert done.task.id == task.id
    assert done.task.status.state == a2a.TASK_STATE_COMPLETED
    assert done.task.artifacts[0].parts[0].text == "21"
    assert "not INPUT_REQUIRED" in str(refused.value)


async def test_a_stream_ends_at_the_question_and_the_follow_up_streams_the_rest() -> None:
    async with a2a_mesh(CalculatorAgent()) as mesh, a2a_client(mesh.address) as client:
        first = [e async for e in client.send_message(message("a + b", skill="calculator/solve"))]
        task = first[0].task
        second = [e async for e in client.send_message(follow_up(task, "1"))]
        third = [e async for e in client.send_message(follow_up(task, "41"))]
        unknown = a2a.Task(id=uuid.uuid4().hex)
        with pytest.raises(Exception, match="does not exist"):
            [e async for e in client.send_message(follow_up(unknown, "1"))]

    def states(events: list[a2a.StreamResponse]) -> list[int]:
        return [e.status_update.status.state for e in events if e.HasField("status_update")]

    assert states(first)[-1] == a2a.TASK_STATE_INPUT_REQUIRED
    assert first[-1].status_update.status.message.parts[0].text == "What is a?"
    assert states(second)[-1] == a2a.TASK_STATE_INPUT_REQUIRED
    assert second[-1].status_update.status.message.parts[0].text == "What is b?"
    assert states(third)[-1] == a2a.TASK_STATE_COMPLETED
    artifacts = [e.artifact_update.artifact for e in third if e.HasField("artifact_update")]
    assert artifacts[-1].parts[0].text == "42"
