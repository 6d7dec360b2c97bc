"""A2A push notifications: a local webhook receives a task's state changes, retried after a 500."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from a2a.types import a2a_pb2 as a2a
from a2atest import a2a_mesh, message
from meshtest import ProbeAgent, wait_until
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from test_http_a2a import REFUSED, http_client

from agentmesh.gateway.http import HttpServer

ENDED = ("TASK_STATE_COMPLETED", "TASK_STATE_CANCELED")


@dataclass
class Webhook:
    """Answers 500 to its first POST, then 204; records every POST."""

    received: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def endpoint(self, request: Request) -> Response:
        body = await request.json()
        self.received.append((dict(request.headers), body))
        if len(self.received) == 1:
            return Response(status_code=500)
        if body["statusUpdate"]["status"]["state"] in (
            "TASK_STATE_COMPLETED",
            "TASK_STATE_CANCELED",
        ):
            self.ended.set()
        return Response(status_code=204)


@contextlib.asynccontextmanager
async def webhook() -> AsyncIterator[Webhook]:
    hook = Webhook()
    app = Starlette(routes=[Route("/hook", hook.endpoint, methods=["POST"])])
    async with HttpServer(app, host="127.0.0.1", port=0).serving() as port:
        hook.url = f"http://127.0.0.1:{port}/hook"
        yield hook


def config(task_id: str, url: str) -> a2a.TaskPushNotificationConfig:
    return a2a.TaskPushNotificationConfig(
        task_id=task_id,
        url=url,
        token="tok-1",
        authentication=a2a.AuthenticationInfo(scheme="Bearer", credentials="hook-secret"),
    )


@pytest.mark.parametrize("binding", ["JSONRPC", "HTTP+JSON"])
async def test_a_webhook_gets_the_tasks_state_changes_retried_after_a_500(binding: str) -> None:
    probe = ProbeAgent()
    async with (
        webhook() as hook,
        a2a_mesh(probe, http_port=0, push_allow_private=True) as mesh,
    ):
        url = mesh.gateway.http_url()
        assert url is not None
        async with http_client(url, binding, streaming=False) as client:
            held = message("x", skill="probe/hold")
            held.configuration.return_immediately = True
            [first] = [e async for e in client.send_message(held)]
            task_id = first.task.id
            created = await client.create_task_push_notification_config(config(task_id, hook.url))
            listed = await client.list_task_push_notification_configs(
                a2a.ListTaskPushNotificationConfigsRequest(task_id=task_id)
            )
            got = await client.get_task_push_notification_config(
                a2a.GetTaskPushNotificationConfigRequest(task_id=task_id, id=created.id)
            )
            await wait_until(probe.entered.is_set)
            probe.release.set()
            await asyncio.wait_for(hook.ended.wait(), 30)
    assert created.id
    assert [c.id for c in listed.configs] == [created.id]
    assert got.url == hook.url
    states = [body["statusUpdate"]["status"]["state"] for _, body in hook.received]
    assert states[-1] == "TASK_STATE_COMPLETED"
    # the first POST got a 500 and was sent again
    assert states.count(states[0]) >= 2
    for headers, body in hook.received:
        assert headers["authorization"] == "Bearer hook-secret"
        assert headers["x-a2a-notification-token"] == "tok-1"
        assert body["statusUpdate"]["taskId"] == task_id


async def test_a_webhook_on_a_message_and_forbidden_addresses() -> None:
    async with a2a_mesh(ProbeAgent(), http_port=0) as mesh:
        url = mesh.gateway.http_url()
        assert url is not None
        async with http_client(url, "JSONRPC", streaming=False) as client:
            held = message("x", skill="probe/hold")
            held.configuration.return_immediately = True
            [first] = [e async for e in client.send_message(held)]
            for forbidden, reason in [
                ("http://127.0.0.1:9/hook", "loopback, link-local or private"),
                ("http://169.254.169.254/latest", "loopback, link-local or private"),
                ("http://10.1.2.3/hook", "loopback, link-local or private"),
                ("ftp://example.com/hook", "scheme must be http or https"),
            ]:
                with pytest.raises(REFUSED, match=reason):
                    await client.create_task_push_notification_config(
                        config(first.task.id, forbidden)
                    )
            on_message = message("y", skill="probe/echo")
            on_message.configuration.task_push_notification_config.url = "http://127.0.0.1:9/x"
            with pytest.raises(REFUSED, match="loopback, link-local or private"):
                [e async for e in client.send_message(on_message)]
            await client.cancel_task(a2a.CancelTaskRequest(id=first.task.id))
