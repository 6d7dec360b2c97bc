"""The HTTP port's admission: every A2A call over HTTP passes :meth:`Guard.admit`.

The gRPC port admits each call in :class:`~agentmesh.gateway.guard.GuardInterceptor`;
here :class:`GuardMiddleware` does the same for the A2A HTTP bindings, under the
same method names (``/lf.a2a.v1.A2AService/SendMessage``...), so keys, scopes,
rate limits, ``max_jobs`` and the audit log hold on both ports alike. It reads the
request once (bounded), names the A2A method it calls (the JSON-RPC ``method``, or
the HTTP+JSON route), parses a message send into its A2A request (as sent to one
agent's endpoint, when it is), and hands the body on unchanged.

Agent cards are public; ``/mcp`` admits each MCP request itself (see
:mod:`agentmesh.gateway.mcp`), and ``/dashboard`` each of its own
(:mod:`agentmesh.gateway.http.dashboard`). A refusal is an HTTP error (401 with
``WWW-Authenticate``, 403, 429 with ``Retry-After``) whose JSON body says why.
The call runs in a server span continuing the caller's ``traceparent``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import grpc
from a2a.types import a2a_pb2 as a2a
from google.protobuf import json_format
from opentelemetry import propagate, trace

from agentmesh.gateway.auth import AuthError, set_current_principal
from agentmesh.gateway.guard import ALLOW, DENY, Guard

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

A2A_SERVICE = "lf.a2a.v1.A2AService"
CARD_SUFFIX = "/.well-known/agent-card.json"
OPEN_PREFIXES = ("/mcp", "/dashboard")  # each admits its own requests
AGENT_PATH = re.compile(r"^/agents/(?P<name>[^/]+)(?P<rest>/.*)?$")
_JSONRPC_METHODS = frozenset(
    {
        "SendMessage",
        "SendStreamingMessage",
        "GetTask",
        "ListTasks",
        "CancelTask",
        "SubscribeToTask",
        "CreateTaskPushNotificationConfig",
        "GetTaskPushNotificationConfig",
        "ListTaskPushNotificationConfigs",
        "DeleteTaskPushNotificationConfig",
        "GetExtendedAgentCard",
    }
)
_CONFIGS = r"/tasks/[^/]+/pushNotificationConfigs"
_REST_ROUTES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("POST", re.compile(r"/message:send$"), "SendMessage"),
    ("POST", re.compile(r"/message:stream$"), "SendStreamingMessage"),
    ("POST", re.compile(r"/tasks/[^/]+:cancel$"), "CancelTask"),
    ("*", re.compile(r"/tasks/[^/]+:subscribe$"), "SubscribeToTask"),
    ("GET", re.compile(_CONFIGS + r"/[^/]+$"), "GetTaskPushNotificationConfig"),
    ("DELETE", re.compile(_CONFIGS + r"/[^/]+$"), "DeleteTaskPushNotificationConfig"),
    ("POST", re.compile(_CONFIGS + "$"), "CreateTaskPushNotificationConfig"),
    ("GET", re.compile(_CONFIGS + "$"), "ListTaskPushNotificationConfigs"),
    ("GET", re.compile(r"/tasks/[^/]+$"), "GetTask"),
    ("GET", re.compile(r"/tasks$"), "ListTasks"),
    ("GET", re.compile(r"/extendedAgentCard$"), "GetExtendedAgentCard"),
)
_HTTP_STATUS = {
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
}
_SENDS = ("SendMessage", "SendStreamingMessage")

_tracer = trace.get_tracer("agentmesh.gateway.http")


def headers_of(scope: Scope) -> list[tuple[str, str]]:
    """An ASGI request's headers as gRPC-style metadata (lower-case names)."""
    return [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]]


def peer_of(scope: Scope) -> str:
    client = scope.get("client")
    return f"ipv4:{client[0]}:{client[1]}" if client else "unknown"


def a2a_call(http_method: str, path: str, body: bytes) -> tuple[str, a2a.SendMessageRequest | None]:
    """The A2A method an HTTP request calls, and its message when it sends one."""
    if "/rest/" in path or path.endswith("/rest"):
        tail = path.split("/rest", 1)[1]
        name = next(
            (
                name
                for verb, pattern, name in _REST_ROUTES
                if verb in ("*", http_method) and pattern.search(tail)
            ),
            "Unknown",
        )
        params: Any = _json(body) if name in _SENDS else None
    else:
        envelope = _json(body)
        method = envelope.get("method") if isinstance(envelope, dict) else None
        name = method if isinstance(method, str) and method in _JSONRPC_METHODS else "Unknown"
        params = envelope.get("params") if name in _SENDS and isinstance(envelope, dict) else None
    request = None
    if isinstance(params, dict):
        try:
            request = json_format.ParseDict(
                params, a2a.SendMessageRequest(), ignore_unknown_fields=True
            )
        except (json_format.ParseError, ValueError, TypeError):
            request = None  # the binding refuses it with its own message
    return f"/{A2A_SERVICE}/{name}", request


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


class GuardMiddleware:
    """Admits every A2A HTTP call through :meth:`Guard.admit` (see the module)."""

    def __init__(
        self,
        app: ASGIApp,
        guard: Guard,
        *,
        aimed: Callable[[a2a.SendMessageRequest, str | None], a2a.SendMessageRequest],
        max_body_bytes: int,
    ) -> None:
        """``aimed``: a message as sent to one agent's endpoint (the A2A handler's)."""
        self._app = app
        self._guard = guard
        self._aimed = aimed
        self._max_body = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or path.endswith(CARD_SUFFIX) or path.startswith(OPEN_PREFIXES):
            await self._app(scope, receive, send)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self._max_body:
                too_large = f"request body over {self._max_body} bytes (max_message_bytes)"
                await _reply(send, 413, "PAYLOAD_TOO_LARGE", too_large)
                return
        method, request = a2a_call(scope["method"], path, body)
        agent = AGENT_PATH.match(path)
        if request is not None and agent is not None:
            try:
                request = self._aimed(request, agent["name"])
            except Exception:  # refused with its own message by the handler
                request = None
        metadata = headers_of(scope)
        parent = propagate.extract(dict(metadata))
        with _tracer.start_as_current_span(
            method.lstrip("/"), context=parent, kind=trace.SpanKind.SERVER,
            attributes={"rpc.system": "a2a", "http.route": path[:128]},
        ):  # fmt: skip
            await self._admitted(scope, receive, send, body, method, request, metadata)

    async def _admitted(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        body: bytes,
        method: str,
        request: a2a.SendMessageRequest | None,
        metadata: list[tuple[str, str]],
    ) -> None:
        guard = self._guard
        try:
            principal = await guard.admit(method, metadata, request, lambda: peer_of(scope))
        except AuthError as exc:
            guard.audit(principal=exc.principal, method=method, request=request,
                        decision=DENY, status=exc.code, metadata=metadata)  # fmt: skip
            await _refuse(send, exc)
            return
        set_current_principal(principal)
        status = [500]

        pending = [body]

        async def replay() -> Message:
            if not pending:  # the body was read: what comes next (a disconnect) is the client's
                return await receive()
            return {"type": "http.request", "body": pending.pop(), "more_body": False}

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self._app(scope, replay, sending)
        finally:
            code = grpc.StatusCode.OK if status[0] < 400 else grpc.StatusCode.UNKNOWN
            guard.audit(principal=principal.id, method=method, request=request,
                        decision=ALLOW, status=code, metadata=metadata)  # fmt: skip


async def _refuse(send: Send, exc: AuthError) -> None:
    headers: list[tuple[bytes, bytes]] = []
    if exc.code == grpc.StatusCode.UNAUTHENTICATED:
        headers.append((b"www-authenticate", b'Bearer realm="agentmesh"'))
    if exc.retry_after is not None:
        headers.append((b"retry-after", str(max(1, math.ceil(exc.retry_after))).encode()))
    await _reply(send, _HTTP_STATUS.get(exc.code, 403), exc.code.name, exc.message, headers)


async def _reply(
    send: Send,
    http_status: int,
    status: str,
    message: str,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """A JSON error in the HTTP+JSON binding's shape (``{"error": {code, status, message}}``)."""
    payload = json.dumps(
        {"error": {"code": http_status, "status": status, "message": message}}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": http_status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
