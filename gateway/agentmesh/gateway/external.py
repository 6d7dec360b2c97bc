"""External A2A agents: an A2A v1 agent behind the calls the gateway makes to every agent.

The gateway calls an agent through three methods of ``agentmesh.v1.Agent``:
``Invoke``, ``InvokeStream`` and ``GetCard``. :class:`A2AAgentStub` offers
the same three over an a2a-sdk client transport (the gRPC binding, or
JSON-RPC over HTTP through httpx), so routing, fan-out, workflows, breakers,
retries, hedging, bulkheads, fallbacks, spans and metrics treat an A2A agent
exactly like a native one. Failures are raised as ``grpc.aio.AioRpcError``
with the status a native agent would have given.

The mapping:

- a request becomes one A2A message: its parts and metadata as they are,
  plus ``skill`` and ``options`` in the message's metadata (A2A has no skill
  field), and never a task id (a mesh call is a new task);
- ``Invoke`` sends it blocking (``SendMessage``) and follows the task with
  ``SubscribeToTask`` if the agent answered before it ended;
- ``InvokeStream`` uses ``SendStreamingMessage``: the task's first event is
  ``started``, artifact updates are partial outputs, and ``COMPLETED`` is the
  final response (its artifacts, or the status message when there are none);
- ``FAILED``, ``REJECTED``, ``CANCELED``, ``INPUT_REQUIRED`` and
  ``AUTH_REQUIRED`` end the call with INTERNAL, FAILED_PRECONDITION or
  CANCELLED naming the agent and quoting its status message;
- a call cancelled (or past its deadline) while the agent's task runs sends
  ``CancelTask`` for it, so the agent stops too;
- the card is the agent's A2A card, read from ``card_url`` (HTTP), the
  well-known path beside a JSON-RPC endpoint, or ``GetExtendedAgentCard``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import grpc
import httpx
from a2a.client import ClientCallContext
from a2a.client.card_resolver import parse_agent_card
from a2a.client.errors import A2AClientError, A2AClientTimeoutError
from a2a.client.transports.base import ClientTransport
from a2a.client.transports.grpc import GrpcTransport
from a2a.client.transports.jsonrpc import JsonRpcTransport
from a2a.types import a2a_pb2 as a2a
from a2a.utils import errors as a2a_errors
from a2a.utils.constants import (
    AGENT_CARD_WELL_KNOWN_PATH,
    PROTOCOL_VERSION_CURRENT,
    VERSION_HEADER,
)
from google.protobuf.json_format import ParseError
from google.protobuf.message import Message as ProtoMessage

from agentmesh.gateway.config import A2AAgentConfig
from agentmesh.runtime.principal import PRINCIPAL_HEADER
from agentmesh.runtime.status import RETRY_AFTER
from agentmesh.runtime.wire import struct_to_dict
from agentmesh.v1 import agent_pb2
from agentmesh.v1 import messages_pb2 as pb

log = logging.getLogger("agentmesh.gateway.external")

Metadata = Sequence[tuple[str, str]]
T = TypeVar("T", bound=ProtoMessage)

CANCEL_TIMEOUT = 5.0
"""Seconds a CancelTask sent after an abandoned call may take."""

_A2A_CODES: dict[type[Exception], grpc.StatusCode] = {
    a2a_errors.InvalidRequestError: grpc.StatusCode.INVALID_ARGUMENT,
    a2a_errors.InvalidParamsError: grpc.StatusCode.INVALID_ARGUMENT,
    a2a_errors.ContentTypeNotSupportedError: grpc.StatusCode.INVALID_ARGUMENT,
    a2a_errors.JSONParseError: grpc.StatusCode.INVALID_ARGUMENT,
    a2a_errors.MethodNotFoundError: grpc.StatusCode.UNIMPLEMENTED,
    a2a_errors.TaskNotFoundError: grpc.StatusCode.NOT_FOUND,
    a2a_errors.TaskNotCancelableError: grpc.StatusCode.FAILED_PRECONDITION,
    a2a_errors.UnsupportedOperationError: grpc.StatusCode.FAILED_PRECONDITION,
    a2a_errors.PushNotificationNotSupportedError: grpc.StatusCode.FAILED_PRECONDITION,
    a2a_errors.ExtendedAgentCardNotConfiguredError: grpc.StatusCode.FAILED_PRECONDITION,
    a2a_errors.ExtensionSupportRequiredError: grpc.StatusCode.FAILED_PRECONDITION,
    a2a_errors.VersionNotSupportedError: grpc.StatusCode.FAILED_PRECONDITION,
    a2a_errors.InternalError: grpc.StatusCode.INTERNAL,
    a2a_errors.InvalidAgentResponseError: grpc.StatusCode.INTERNAL,
}
_HTTP_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.UNIMPLEMENTED,  # no A2A endpoint at that URL
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.UNAVAILABLE,
}
_ENDED_BADLY = {
    a2a.TASK_STATE_FAILED: (grpc.StatusCode.INTERNAL, "failed"),
    a2a.TASK_STATE_REJECTED: (grpc.StatusCode.FAILED_PRECONDITION, "rejected the task"),
    a2a.TASK_STATE_CANCELED: (grpc.StatusCode.CANCELLED, "canceled the task"),
    a2a.TASK_STATE_INPUT_REQUIRED: (
        grpc.StatusCode.FAILED_PRECONDITION,
        "asks for more input (a mesh call carries one message)",
    ),
    a2a.TASK_STATE_AUTH_REQUIRED: (grpc.StatusCode.FAILED_PRECONDITION, "asks for authorization"),
}
_TERMINAL = frozenset(
    {a2a.TASK_STATE_COMPLETED, a2a.TASK_STATE_FAILED, a2a.TASK_STATE_REJECTED,
     a2a.TASK_STATE_CANCELED}
)  # fmt: skip


def rpc_error(
    code: grpc.StatusCode, details: str, *, retry_after: str | None = None
) -> grpc.aio.AioRpcError:
    """An error shaped like a failed gRPC call, as upstream expects from any agent."""
    trailing = grpc.aio.Metadata()
    if retry_after is not None:
        trailing.add(RETRY_AFTER, retry_after)
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, details)


def as_rpc_error(exc: Exception, agent: str) -> grpc.aio.AioRpcError:
    """An a2a-sdk client failure as the status a native agent would have answered."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc
    cause = exc.__cause__
    if isinstance(cause, grpc.aio.AioRpcError) and type(exc) not in _A2A_CODES:
        return cause  # the gRPC binding's own status (UNAVAILABLE, DEADLINE_EXCEEDED, ...)
    if isinstance(exc, A2AClientTimeoutError):
        return rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, f"A2A agent {agent!r} timed out")
    if isinstance(cause, httpx.HTTPStatusError):
        response = cause.response
        status = response.status_code
        # Only gateway-side outages are retried: a 500 may have done part of the work.
        return rpc_error(
            _HTTP_CODES.get(status, grpc.StatusCode.INTERNAL),
            f"HTTP {status} {response.reason_phrase}",
            retry_after=response.headers.get("retry-after"),
        )
    if isinstance(cause, httpx.TransportError):
        return rpc_error(grpc.StatusCode.UNAVAILABLE, f"{type(cause).__name__}: {cause}")
    code = _A2A_CODES.get(type(exc))
    if code is not None:
        return rpc_error(code, f"{type(exc).__name__}: {exc}")
    return rpc_error(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")


def _reparsed(source: ProtoMessage, target: T) -> T:
    """agentmesh's Part, Message, Artifact and AgentSkill have A2A's field numbers."""
    target.ParseFromString(source.SerializeToString())
    return target


def send_request(request: pb.InvokeRequest, *, blocking: bool) -> a2a.SendMessageRequest:
    """The A2A message for ``request``: its parts and metadata, plus skill and options."""
    message = _reparsed(request.message, a2a.Message())
    message.role = a2a.ROLE_USER
    message.task_id = ""
    message.message_id = message.message_id or uuid.uuid4().hex
    if request.skill:
        message.metadata["skill"] = request.skill
    if request.options.fields:
        message.metadata["options"] = struct_to_dict(request.options)
    send = a2a.SendMessageRequest(message=message)
    send.configuration.return_immediately = not blocking
    return send


def _known(message: T) -> T:
    """``message`` without the A2A-only fields a reparse kept as unknown ones."""
    message.DiscardUnknownFields()
    return message


def mesh_card(card: a2a.AgentCard) -> pb.AgentCard:
    """An A2A card in agentmesh's shape (the fields both have)."""
    return pb.AgentCard(
        name=card.name,
        version=card.version,
        description=card.description,
        skills=[_known(_reparsed(s, pb.AgentSkill())) for s in card.skills],
        capabilities=pb.AgentCapabilities(
            streaming=card.capabilities.streaming,
            push_notifications=card.capabilities.push_notifications,
            extensions=[e.uri for e in card.capabilities.extensions],
        ),
        default_input_modes=list(card.default_input_modes),
        default_output_modes=list(card.default_output_modes),
    )


def _append_parts(artifact: pb.Artifact, parts: Iterable[pb.Part]) -> None:
    """Add ``parts``; text following text merges into one part, as a native agent's does."""
    for part in parts:
        last = artifact.parts[-1] if artifact.parts else None
        if (
            last is not None
            and last.WhichOneof("content") == "text"
            and part.WhichOneof("content") == "text"
            and last.media_type == part.media_type
        ):
            last.text += part.text
        else:
            artifact.parts.append(part)


def _text_of(message: a2a.Message) -> str:
    return " ".join(p.text for p in message.parts if p.text) or "no message"


class _TaskFollower:
    """Folds one A2A task's events into agentmesh's: started, partial outputs, the final one."""

    def __init__(self, agent: str, skill: str) -> None:
        self.agent = agent
        self.skill = skill
        self.task_id = ""
        self.context_id = ""
        self._ended = False  # the task reached a terminal state (or was a plain message)
        self._artifacts: dict[str, pb.Artifact] = {}
        self._metadata: dict[str, Any] = {}

    def finished(self) -> bool:
        """The task reached a terminal state (or the agent answered with a plain message)."""
        return self._ended

    @property
    def open_task(self) -> str:
        """The agent's task id while it may still run (to cancel it), else ""."""
        return "" if self._ended else self.task_id

    def feed(self, event: a2a.StreamResponse) -> list[pb.InvokeEvent]:
        """The native events ``event`` makes; raises AioRpcError when the task ended badly."""
        kind = event.WhichOneof("payload")
        events = self._start(event)
        if kind == "message":
            self._ended = True
            artifact = pb.Artifact(artifact_id="response", name="response")
            artifact.parts.extend(_reparsed(p, pb.Part()) for p in event.message.parts)
            self._artifacts = {"response": artifact}
            events.append(self._final())
        elif kind == "task":
            task = event.task
            if task.HasField("metadata"):
                self._metadata.update(struct_to_dict(task.metadata))
            for stored in task.artifacts:
                self._artifacts[stored.artifact_id] = _reparsed(stored, pb.Artifact())
            events += self._status(task.status)
        elif kind == "status_update":
            events += self._status(event.status_update.status)
        elif kind == "artifact_update":
            update = event.artifact_update
            chunk = _reparsed(update.artifact, pb.Artifact())
            current = self._artifacts.get(chunk.artifact_id)
            if update.append and current is not None:
                _append_parts(current, chunk.parts)
            else:
                self._artifacts[chunk.artifact_id] = chunk
            partial = pb.InvokeEvent()
            partial.partial.artifact_id = chunk.artifact_id
            partial.partial.parts.extend(chunk.parts)
            partial.partial.append = update.append
            events.append(partial)
        return events

    def _start(self, event: a2a.StreamResponse) -> list[pb.InvokeEvent]:
        if self.task_id:
            return []
        payload = getattr(event, event.WhichOneof("payload") or "task")
        task_id = getattr(payload, "id", "") or getattr(payload, "task_id", "")
        self.task_id = task_id or uuid.uuid4().hex
        self.context_id = payload.context_id
        started = pb.InvokeEvent()
        started.started.task_id = self.task_id
        started.started.agent = self.agent
        started.started.skill = self.skill
        return [started]

    def _status(self, status: a2a.TaskStatus) -> list[pb.InvokeEvent]:
        state = status.state
        if state in _TERMINAL or state in _ENDED_BADLY:
            self._ended = state in _TERMINAL
        if state == a2a.TASK_STATE_COMPLETED:
            if not self._artifacts and status.message.parts:
                artifact = pb.Artifact(artifact_id="response", name="response")
                artifact.parts.extend(_reparsed(p, pb.Part()) for p in status.message.parts)
                self._artifacts["response"] = artifact
            return [self._final()]
        if state in _ENDED_BADLY:
            code, what = _ENDED_BADLY[state]
            raise rpc_error(
                code,
                f"A2A agent {self.agent!r} {what} (task {self.task_id}): "
                f"{_text_of(status.message)}",
            )
        return []

    def _final(self) -> pb.InvokeEvent:
        event = pb.InvokeEvent()
        final = event.final
        final.task_id = self.task_id
        final.agent = self.agent
        final.skill = self.skill
        final.state = pb.TASK_STATE_COMPLETED
        final.artifacts.extend(self._artifacts.values())
        metadata = dict(self._metadata)
        if self.context_id:
            metadata["a2a_context_id"] = self.context_id
        if metadata:
            final.metadata.update(metadata)
        return event


class A2AStreamCall:
    """An ``InvokeStream`` over A2A: ``read()`` gives native events then ``grpc.aio.EOF``.

    The A2A stream is read by a task of its own into a small queue, so
    ``cancel()`` may come at any moment (as on a gRPC call) and stops it.
    """

    def __init__(self, agent: A2AAgentStub, request: pb.InvokeRequest, timeout: float | None,
                 metadata: Metadata | None) -> None:  # fmt: skip
        self._agent = agent
        self._follower = _TaskFollower(agent.name, request.skill)
        self._queue: asyncio.Queue[pb.InvokeEvent | grpc.aio.AioRpcError | None] = asyncio.Queue(
            maxsize=16
        )
        self._pump = asyncio.create_task(
            self._read_remote(request, timeout, metadata), name=f"a2a-stream:{agent.name}"
        )

    async def read(self) -> Any:
        """The next event, or ``grpc.aio.EOF``; raises AioRpcError as a failed gRPC stream does."""
        if self._pump.done() and self._queue.empty():
            self._pump.result()  # raises if the pump was cancelled or broke
            return grpc.aio.EOF
        item = await self._queue.get()
        if item is None:
            return grpc.aio.EOF
        if isinstance(item, grpc.aio.AioRpcError):
            raise item
        return item

    def cancel(self) -> bool:
        """Stop reading; the agent's task, if it still runs, gets a CancelTask."""
        if self._pump.done():
            return False
        self._pump.cancel()
        self._agent.cancel_later(self._follower.open_task)
        return True

    async def _read_remote(
        self, request: pb.InvokeRequest, timeout: float | None, metadata: Metadata | None
    ) -> None:
        follower = self._follower
        try:
            async with asyncio.timeout(timeout):
                async for native in self._agent.events(request, timeout, metadata, follower):
                    await self._queue.put(native)
            await self._queue.put(None)
        except TimeoutError:
            self._agent.cancel_later(follower.open_task)
            await self._queue.put(self._agent.too_late())
        except Exception as exc:  # every failure reaches the reader as a status
            self._agent.cancel_later(follower.open_task)
            await self._queue.put(as_rpc_error(exc, self._agent.name))


class A2AAgentStub:
    """An A2A v1 agent offering the ``agentmesh.v1.Agent`` calls the gateway makes.

    ``Invoke``, ``InvokeStream`` and ``GetCard`` take the arguments of the
    generated gRPC stub's methods and fail with ``grpc.aio.AioRpcError``.
    """

    def __init__(
        self,
        name: str,
        transport: ClientTransport,
        config: A2AAgentConfig,
        *,
        card_url: str | None,
        http: httpx.AsyncClient | None,
        skills: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.transport = transport
        self._headers = dict(config.headers)
        if not isinstance(transport, GrpcTransport):  # which adds it to the metadata itself
            self._headers.setdefault(VERSION_HEADER, PROTOCOL_VERSION_CURRENT)
        self._card_url = card_url
        self._http = http
        self._skills = tuple(skills)
        self.card: a2a.AgentCard | None = None
        self._cancels: set[asyncio.Task[None]] = set()

    @classmethod
    def over_grpc(
        cls, name: str, channel: grpc.aio.Channel, config: A2AAgentConfig, skills: Sequence[str]
    ) -> A2AAgentStub:
        http = httpx.AsyncClient() if config.card_url else None
        return cls(
            name,
            GrpcTransport(channel, None),
            config,
            card_url=config.card_url,
            http=http,
            skills=skills,
        )

    @classmethod
    def over_jsonrpc(
        cls, name: str, url: str, config: A2AAgentConfig, skills: Sequence[str]
    ) -> A2AAgentStub:
        # No client-wide timeout: each call sets its own from the caller's deadline.
        http = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=5.0))
        parts = urlsplit(url)
        card_url = config.card_url or f"{parts.scheme}://{parts.netloc}{AGENT_CARD_WELL_KNOWN_PATH}"
        transport = JsonRpcTransport(http, a2a.AgentCard(), url, is_shared_httpx=True)
        return cls(name, transport, config, card_url=card_url, http=http, skills=skills)

    @property
    def streaming(self) -> bool:
        """Whether to use SendStreamingMessage: the card says so (or no card yet: try)."""
        return self.card is None or self.card.capabilities.streaming

    def call_context(self, timeout: float | None, metadata: Metadata | None) -> ClientCallContext:
        """The configured headers plus the call's metadata (trace context) and deadline.

        The caller's principal is for the mesh's own agents: it does not leave the mesh."""
        parameters = dict(self._headers)
        parameters.update((k, v) for k, v in metadata or () if k != PRINCIPAL_HEADER)
        return ClientCallContext(service_parameters=parameters, timeout=timeout)

    # -- the agentmesh.v1.Agent calls ------------------------------------------------

    def Invoke(
        self,
        request: pb.InvokeRequest,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> Awaitable[pb.InvokeResponse]:
        return self._invoke(request, timeout, metadata)

    def InvokeStream(
        self,
        request: pb.InvokeRequest,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
    ) -> A2AStreamCall:
        return A2AStreamCall(self, request, timeout, metadata)

    def GetCard(
        self, request: agent_pb2.GetCardRequest, *, timeout: float | None = None
    ) -> Awaitable[pb.AgentCard]:
        return self._guarded(self._fetch_card(timeout))

    async def close(self) -> None:
        for task in list(self._cancels):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.transport.close()
        if self._http is not None:
            await self._http.aclose()

    # -- calls ---------------------------------------------------------------------

    async def _invoke(
        self, request: pb.InvokeRequest, timeout: float | None, metadata: Metadata | None
    ) -> pb.InvokeResponse:
        follower = _TaskFollower(self.name, request.skill)
        final: pb.InvokeEvent | None = None
        try:
            async with asyncio.timeout(timeout):
                async for event in self.events(request, timeout, metadata, follower):
                    final = event
        except TimeoutError:
            self.cancel_later(follower.open_task)
            raise self.too_late() from None
        except asyncio.CancelledError:  # the caller went away (or a hedge won)
            self.cancel_later(follower.open_task)
            raise
        except Exception as exc:
            self.cancel_later(follower.open_task)
            raise as_rpc_error(exc, self.name) from None
        assert final is not None  # events() ends with the final response or raises
        return final.final

    def too_late(self) -> grpc.aio.AioRpcError:
        return rpc_error(
            grpc.StatusCode.DEADLINE_EXCEEDED, f"A2A agent {self.name!r} did not finish in time"
        )

    async def events(
        self,
        request: pb.InvokeRequest,
        timeout: float | None,
        metadata: Metadata | None,
        follower: _TaskFollower,
    ) -> AsyncIterator[pb.InvokeEvent]:
        """The native events of ``request``'s task, ending with the final response.

        Streaming when the agent can (its task id arrives first, so a call
        given up can cancel it); otherwise a blocking send, then the task
        followed with SubscribeToTask if it had not ended.
        """
        context = self.call_context(timeout, metadata)
        if self.streaming:
            updates = self.transport.send_message_streaming(
                send_request(request, blocking=False), context=context
            )
        else:
            response = await self.transport.send_message(
                send_request(request, blocking=True), context=context
            )
            first = a2a.StreamResponse()
            if response.HasField("message"):
                first.message.CopyFrom(response.message)
            else:
                first.task.CopyFrom(response.task)
            for native in follower.feed(first):
                yield native
            if follower.finished():
                return
            updates = self.transport.subscribe(
                a2a.SubscribeToTaskRequest(id=follower.task_id), context=context
            )
        async for update in updates:
            for native in follower.feed(update):
                yield native
            if follower.finished():
                return
        raise rpc_error(
            grpc.StatusCode.INTERNAL,
            f"A2A agent {self.name!r} stopped reporting task {follower.task_id or '(none)'} "
            "before it ended",
        )

    async def _fetch_card(self, timeout: float | None) -> pb.AgentCard:
        if self._card_url is not None:
            card = await self._card_over_http(self._card_url, timeout)
            if isinstance(self.transport, JsonRpcTransport):
                self.transport.agent_card = card
            if card.capabilities.extended_agent_card:
                card = await self.transport.get_extended_agent_card(
                    a2a.GetExtendedAgentCardRequest(), context=self.call_context(timeout, ())
                )
        else:
            try:
                card = await self.transport.get_extended_agent_card(
                    a2a.GetExtendedAgentCardRequest(), context=self.call_context(timeout, ())
                )
            except a2a_errors.ExtendedAgentCardNotConfiguredError:
                # Reachable, but it publishes no card over gRPC: what the config says.
                card = a2a.AgentCard(
                    name=self.name, skills=[a2a.AgentSkill(id=s, name=s) for s in self._skills]
                )
        self.card = card
        return mesh_card(card)

    async def _card_over_http(self, url: str, timeout: float | None) -> a2a.AgentCard:
        assert self._http is not None
        try:
            response = await self._http.get(url, headers=self._headers, timeout=timeout)
            response.raise_for_status()
            return parse_agent_card(response.json())
        except httpx.HTTPStatusError as exc:
            raise A2AClientError(f"card at {url}: HTTP {exc.response.status_code}") from exc
        except httpx.TransportError as exc:
            raise A2AClientError(f"card at {url}: {exc}") from exc
        except (ValueError, ParseError) as exc:
            raise rpc_error(
                grpc.StatusCode.INTERNAL, f"card at {url} is not an A2A agent card: {exc}"
            ) from None

    async def _guarded(self, call: Awaitable[T]) -> T:
        """``call``, failing only with AioRpcError (the registry's refresh expects no other)."""
        try:
            return await call
        except Exception as exc:
            raise as_rpc_error(exc, self.name) from None

    # -- cancelling the agent's task -------------------------------------------------

    def cancel_later(self, task_id: str) -> None:
        """Send CancelTask for ``task_id`` in the background ("" : nothing to cancel)."""
        if not task_id:
            return
        task = asyncio.get_running_loop().create_task(
            self._cancel(task_id), name=f"a2a-cancel:{self.name}"
        )
        self._cancels.add(task)
        task.add_done_callback(self._cancels.discard)

    async def _cancel(self, task_id: str) -> None:
        try:
            await self.transport.cancel_task(
                a2a.CancelTaskRequest(id=task_id),
                context=self.call_context(CANCEL_TIMEOUT, ()),
            )
        except Exception as exc:  # the task may have ended meanwhile: nothing to do
            log.info(
                "A2A task not cancelled",
                extra={"agent": self.name, "task_id": task_id, "error": str(exc)},
            )
