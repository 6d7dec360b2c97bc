"""A2A push notifications: a task's state changes POSTed to the caller's webhook.

A caller registers a webhook for a task (``CreateTaskPushNotificationConfig``,
or ``configuration.task_push_notification_config`` on the message). The URL is
checked when it is registered: ``http`` or ``https`` only, and its host must
not resolve to a loopback, link-local, private, shared, reserved or multicast
address unless ``push_allow_private`` is set, so a caller cannot make the
gateway reach internal services.

Each state change of the task (the job) is POSTed as an A2A ``StreamResponse``
JSON (a ``statusUpdate``; the final one carries the ended task's status), with
the config's ``token`` in ``X-A2A-Notification-Token`` and its
``authentication`` as ``Authorization: SCHEME CREDENTIALS``. A 5xx answer or a
transport error is retried with exponential backoff and full jitter (the
gateway's retry timing); other answers end that delivery. Configs are kept
in this gateway's memory until their task ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import urllib.parse
import uuid

import httpx
from a2a.types import a2a_pb2 as a2a
from a2a.utils.errors import InvalidParamsError, TaskNotFoundError
from google.protobuf.json_format import MessageToDict

from agentmesh.gateway.a2a.convert import status_of
from agentmesh.gateway.jobs import JobManager
from agentmesh.gateway.jobstore import TERMINAL_STATES
from agentmesh.gateway.policy import RetryPolicy

log = logging.getLogger("agentmesh.gateway.a2a.push")

MAX_CONFIGS_PER_TASK = 10
NOTIFICATION_TOKEN_HEADER = "X-A2A-Notification-Token"  # noqa: S105 (a header name)


def _blocked(address: str) -> bool:
    """Whether an address is not a public unicast destination."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return True
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        ip = mapped
    return (
        not ip.is_global
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


async def check_webhook(url: str, *, allow_private: bool) -> None:
    """Raise A2A ``InvalidParams`` naming what is wrong with a webhook URL."""
    try:
        parsed = urllib.parse.urlparse(url)
        port = parsed.port
    except ValueError:
        raise InvalidParamsError(f"url: {url[:200]!r} is not a URL") from None
    if parsed.scheme not in ("http", "https"):
        raise InvalidParamsError(f"url: the scheme must be http or https, not {parsed.scheme!r}")
    host = parsed.hostname
    if not host:
        raise InvalidParamsError("url: names no host")
    if allow_private:
        return
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port or (443 if parsed.scheme == "https" else 80), type=socket.SOCK_STREAM
        )
    except OSError:
        raise InvalidParamsError(f"url: host {host[:100]!r} does not resolve") from None
    refused = sorted({str(info[4][0]) for info in infos if _blocked(str(info[4][0]))})
    if refused or not infos:
        raise InvalidParamsError(
            f"url: host {host[:100]!r} is a loopback, link-local or private address "
            f"({', '.join(refused)}); the gateway posts only to public addresses "
            "(push_allow_private allows others)"
        )


class PushNotifier:
    """The webhooks of running tasks, and their deliveries (see the module)."""

    def __init__(
        self,
        jobs: JobManager,
        *,
        allow_private: bool,
        retry: RetryPolicy,
        timeout: float = 10.0,
    ) -> None:
        self._jobs = jobs
        self.allow_private = allow_private
        self._retry = retry
        self._timeout = timeout
        self._configs: dict[str, dict[str, a2a.TaskPushNotificationConfig]] = {}
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._client: httpx.AsyncClient | None = None

    async def set(
        self, config: a2a.TaskPushNotificationConfig, context_id: str
    ) -> a2a.TaskPushNotificationConfig:
        """Register ``config`` for its task (its URL checked); returns it with its id."""
        await check_webhook(config.url, allow_private=self.allow_private)
        stored = a2a.TaskPushNotificationConfig()
        stored.CopyFrom(config)
        stored.id = stored.id or uuid.uuid4().hex
        configs = self._configs.setdefault(stored.task_id, {})
        if stored.id not in configs and len(configs) >= MAX_CONFIGS_PER_TASK:
            raise InvalidParamsError(f"at most {MAX_CONFIGS_PER_TASK} webhooks per task")
        configs[stored.id] = stored
        if stored.task_id not in self._watchers:
            self._watchers[stored.task_id] = asyncio.create_task(
                self._watch(stored.task_id, context_id), name=f"push-{stored.task_id}"
            )
        return stored

    def get(self, task_id: str, config_id: str) -> a2a.TaskPushNotificationConfig:
        config = self._configs.get(task_id, {}).get(config_id)
        if config is None:
            raise TaskNotFoundError(f"task {task_id!r} has no push config {config_id[:80]!r}")
        return config

    def list(self, task_id: str) -> list[a2a.TaskPushNotificationConfig]:
        return list(self._configs.get(task_id, {}).values())

    def delete(self, task_id: str, config_id: str) -> None:
        self._configs.get(task_id, {}).pop(config_id, None)

    async def close(self) -> None:
        for watcher in self._watchers.values():
            watcher.cancel()
        for watcher in list(self._watchers.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watcher
        if self._client is not None:
            await self._client.aclose()

    async def _watch(self, task_id: str, context_id: str) -> None:
        try:
            async for event in self._jobs.watch(task_id, 0):
                if event.WhichOneof("event") != "state":
                    continue
                job = event.state
                update = a2a.StreamResponse(
                    status_update=a2a.TaskStatusUpdateEvent(
                        task_id=task_id, context_id=context_id, status=status_of(job, context_id)
                    )
                )
                body = MessageToDict(update)
                await asyncio.gather(
                    *(self._deliver(c, body) for c in list(self._configs.get(task_id, {}).values()))
                )
                if job.state in TERMINAL_STATES:
                    break
        except Exception:
            log.warning("push notifications of task %s stopped", task_id, exc_info=True)
        finally:
            self._configs.pop(task_id, None)
            self._watchers.pop(task_id, None)

    async def _deliver(self, config: a2a.TaskPushNotificationConfig, body: object) -> bool:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout, follow_redirects=False)
        headers: dict[str, str] = {}
        if config.token:
            headers[NOTIFICATION_TOKEN_HEADER] = config.token
        if config.HasField("authentication") and config.authentication.scheme:
            auth = config.authentication
            headers["Authorization"] = f"{auth.scheme} {auth.credentials}".strip()
        for attempt in range(1, self._retry.max_attempts + 1):
            try:
                response = await self._client.post(config.url, json=body, headers=headers)
            except httpx.HTTPError as exc:
                outcome = f"{type(exc).__name__}"
            else:
                if response.status_code < 500:
                    if response.status_code >= 400:
                        log.warning("webhook %s refused a push: HTTP %s", config.url,
                                    response.status_code)  # fmt: skip
                    return response.status_code < 300
                outcome = f"HTTP {response.status_code}"
            if attempt < self._retry.max_attempts:
                await asyncio.sleep(self._retry.backoff.delay(attempt))
        log.warning("webhook %s: push not delivered (%s)", config.url, outcome)
        return False
