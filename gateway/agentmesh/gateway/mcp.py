"""The mesh as a Model Context Protocol server: each agent skill and declared workflow a tool.

Tools are named ``AGENT__SKILL`` (an agent's skill) and ``workflow__NAME`` (a
declared workflow); see docs/mcp.md. A skill's tool takes ``text`` (the
message), ``options`` (an object: the JSON Schema of the skill's options from
the agent's card when it declares one) and, when the skill declares the shape
of its input data, ``data`` (that schema; sent as a data part); a workflow's
takes ``text``. Arguments are checked as the gRPC API checks them (an unknown
argument or option, a mistyped one: INVALID_ARGUMENT naming it). A call is
admitted by the gateway's :class:`~agentmesh.gateway.guard.Guard` as the
``Invoke`` it stands for (credentials from the HTTP request's
``x-api-key`` or ``authorization: Bearer`` header, scopes, rate limit), then goes
through the :class:`~agentmesh.gateway.dispatch.Dispatcher` (routing, breakers,
retries, deadlines, caching) like any other work. With a progress token the call
streams, and each partial output or workflow step becomes a progress
notification. A refused or failed call is a tool error whose text starts with
the gRPC status name (``PERMISSION_DENIED: ...``).

:class:`McpService` builds the low-level ``mcp`` server and its streamable HTTP
transport, which the gateway's HTTP port mounts at ``/mcp``; a change in the set
of tools (agents registered or gone, workflows) is announced to the sessions
that listed them with ``notifications/tools/list_changed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import weakref
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from mcp import types
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.session import ServerSession
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings

from agentmesh.gateway.auth import AuthError, set_current_principal
from agentmesh.gateway.dispatch import Dispatcher
from agentmesh.gateway.guard import ALLOW, DENY, Guard
from agentmesh.gateway.registry import AgentEntry, Registry
from agentmesh.gateway.workflows.catalog import WorkflowCatalog
from agentmesh.runtime import wire
from agentmesh.runtime.errors import AgentError, ErrorCode, InvalidInput
from agentmesh.runtime.schema import check_options
from agentmesh.v1 import messages_pb2 as pb

log = logging.getLogger("agentmesh.gateway.mcp")

SEPARATOR = "__"
WORKFLOW_TOOL_PREFIX = f"workflow{SEPARATOR}"
INVOKE_METHOD = "/agentmesh.v1.Gateway/Invoke"
LIST_METHOD = "/agentmesh.v1.Gateway/ListAgents"
SERVER_NAME = "agentmesh"

_TEXT = {"type": "string", "description": "the message to the skill"}
_SKILL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "text": _TEXT,
        "options": {"type": "object", "description": "the skill's options"},
    },
    "required": ["text"],
}
_WORKFLOW_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"text": {"type": "string", "description": "the workflow's input"}},
    "required": ["text"],
}


def skill_tool_name(agent: str, skill: str) -> str:
    return f"{agent}{SEPARATOR}{skill}"


def target_of_tool(name: str) -> pb.InvokeRequest:
    """The invocation a tool name stands for (agent and skill, or ``workflow:NAME``)."""
    if name.startswith(WORKFLOW_TOOL_PREFIX):
        return pb.InvokeRequest(agent=f"workflow:{name.removeprefix(WORKFLOW_TOOL_PREFIX)}")
    agent, separator, skill = name.partition(SEPARATOR)
    if not separator or not agent or not skill:
        raise AgentError(
            f"no tool {name[:80]!r} (tools are AGENT__SKILL or workflow__NAME; see tools/list)",
            code=ErrorCode.INVALID_ARGUMENT,
        )
    return pb.InvokeRequest(agent=agent, skill=skill)


def _rewrite_refs(schema: Any, prefix: str) -> Any:
    """``schema`` with each local ``#/$defs/NAME`` reference renamed ``#/$defs/PREFIXNAME``."""
    if isinstance(schema, dict):
        return {
            key: (
                f"#/$defs/{prefix}{value.removeprefix('#/$defs/')}"
                if key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/")
                else _rewrite_refs(value, prefix)
            )
            for key, value in schema.items()
        }
    if isinstance(schema, list):
        return [_rewrite_refs(item, prefix) for item in schema]
    return schema


def skill_input_schema(
    options: Mapping[str, Any] | None, data: Mapping[str, Any] | None
) -> dict[str, Any]:
    """A skill tool's ``inputSchema``: ``text``, and ``options`` and ``data`` from the
    skill's schemas on the card (the generic object when it declares no options).

    Each schema's ``$defs`` move to the tool schema's root (prefixed ``options.`` or
    ``data.``), where its references point once it is nested. The options schema is
    closed (``additionalProperties: false``) unless it says otherwise: the agent refuses
    an option its schema does not name."""
    if options is None and data is None:
        return _SKILL_SCHEMA
    properties: dict[str, Any] = {"text": _TEXT, "options": _SKILL_SCHEMA["properties"]["options"]}
    defs: dict[str, Any] = {}
    for key, declared, description in (
        ("options", options, "the skill's options"),
        ("data", data, "the skill's input data (sent as a data part)"),
    ):
        if declared is None:
            continue
        nested = _rewrite_refs(dict(declared), f"{key}.")
        for name, definition in (nested.pop("$defs", None) or {}).items():
            defs[f"{key}.{name}"] = definition
        nested.pop("$schema", None)
        nested.setdefault("description", nested.pop("title", None) or description)
        if key == "options" and nested.get("type") == "object":
            nested.setdefault("additionalProperties", False)
        properties[key] = nested
    schema: dict[str, Any] = {"type": "object", "properties": properties, "required": ["text"]}
    if defs:
        schema["$defs"] = defs
    return schema


def check_arguments(
    name: str, arguments: Mapping[str, Any], schema: Mapping[str, Any]
) -> tuple[str, dict[str, Any], Any]:
    """``(text, options, data)`` of a tool call whose arguments have the right shape;
    an unknown or mistyped argument raises InvalidInput naming it."""
    known = schema.get("properties") or {}
    for argument in arguments:
        if argument not in known:
            raise InvalidInput(
                str(argument)[:80],
                f"unknown argument of tool {name!r} (it takes: {', '.join(known)})",
            )
    text = arguments.get("text")
    if not isinstance(text, str):
        raise InvalidInput("text", "required: the message, a string")
    options = arguments.get("options", {})
    if not isinstance(options, dict):
        raise InvalidInput("options", "must be an object")
    return text, options, arguments.get("data")


def _text_of(parts: Sequence[pb.Part]) -> list[types.TextContent]:
    contents = []
    for part in parts:
        kind = part.WhichOneof("content")
        if kind == "text":
            contents.append(types.TextContent(type="text", text=part.text))
        elif kind == "data":
            contents.append(
                types.TextContent(type="text", text=json.dumps(MessageToDict(part.data)))
            )
        elif kind == "url":
            contents.append(types.TextContent(type="text", text=part.url))
    return contents


class McpService:
    """The MCP server over the gateway's parts (see the module)."""

    def __init__(
        self,
        *,
        registry: Registry,
        workflows: WorkflowCatalog,
        dispatcher: Dispatcher,
        guard: Guard,
        timeout: float,
        watch_interval: float,
        allowed_hosts: Callable[[], list[str]],
    ) -> None:
        """``timeout``: a call's deadline; ``watch_interval``: seconds between checks of
        the tool set (for ``tools/list_changed``); ``allowed_hosts``: Host headers the
        transport accepts (DNS-rebinding protection; the HTTP port's own address)."""
        self._registry = registry
        self._catalog = workflows
        self._dispatcher = dispatcher
        self._guard = guard
        self._timeout = timeout
        self._watch_interval = watch_interval
        self._sessions: weakref.WeakSet[ServerSession] = weakref.WeakSet()
        self.server: Server[Any, Any] = Server(SERVER_NAME)
        self.server.list_tools()(self._list_tools)  # type: ignore[no-untyped-call]
        # Arguments are checked here, with the gRPC API's messages (check_arguments and
        # the skill's options schema), not by the SDK's JSON Schema validation.
        self.server.call_tool(validate_input=False)(self._call_tool)
        self._allowed_hosts = allowed_hosts
        self._manager: StreamableHTTPSessionManager | None = None

    # -- the transport --------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The streamable HTTP transport's sessions and the tool watcher, while open."""
        hosts = self._allowed_hosts()
        self._manager = StreamableHTTPSessionManager(
            self.server,
            security_settings=TransportSecuritySettings(
                enable_dns_rebinding_protection=bool(hosts),
                allowed_hosts=hosts,
                allowed_origins=[f"http://{h}" for h in hosts] + [f"https://{h}" for h in hosts],
            ),
        )
        watcher = asyncio.create_task(self._watch_tools(), name="mcp-tools-watch")
        try:
            async with self._manager.run():
                yield
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """The ``/mcp`` endpoint (an ASGI app)."""
        if self._manager is None:
            raise RuntimeError("the MCP transport is not running")
        await self._manager.handle_request(scope, receive, send)

    def initialization_options(self) -> Any:
        return self.server.create_initialization_options(
            notification_options=NotificationOptions(tools_changed=True)
        )

    # -- tools ------------------------------------------------------------------------

    def tools(self) -> list[types.Tool]:
        tools: list[types.Tool] = []
        for entry in self._registry.entries:
            offered = {s.id: s for s in entry.card.skills} if entry.card is not None else {}
            for skill_id in sorted(entry.skills):
                skill = offered.get(skill_id, pb.AgentSkill(id=skill_id))
                tools.append(
                    types.Tool(
                        name=skill_tool_name(entry.name, skill_id),
                        title=f"{entry.name}: {skill.name or skill_id}",
                        description=skill.description
                        or f"skill {skill_id!r} of agent {entry.name!r}",
                        inputSchema=skill_input_schema(
                            wire.schema_from_proto(skill, "options_schema"),
                            wire.schema_from_proto(skill, "input_schema"),
                        ),
                    )
                )
        for name in self._catalog.names():
            tools.append(
                types.Tool(
                    name=f"{WORKFLOW_TOOL_PREFIX}{name}",
                    title=f"workflow {name}",
                    description=self._catalog.get(name).description or f"workflow {name!r}",
                    inputSchema=_WORKFLOW_SCHEMA,
                )
            )
        return tools

    async def _admit(self, method: str, request: object | None) -> str:
        """The caller admitted by the guard (its principal id); raises AuthError."""
        context = self.server.request_context
        http = context.request
        metadata = [(k.lower(), v) for k, v in http.headers.items()] if http is not None else []
        peer = (
            f"ipv4:{http.client.host}:{http.client.port}"
            if http is not None and http.client is not None
            else "unknown"
        )
        guard = self._guard
        try:
            principal = await guard.admit(method, metadata, request, lambda: peer)
        except AuthError as exc:
            guard.audit(principal=exc.principal, method=method, request=request,
                        decision=DENY, status=exc.code, metadata=metadata)  # fmt: skip
            raise
        set_current_principal(principal)
        return principal.id

    async def _list_tools(self) -> list[types.Tool]:
        try:
            await self._admit(LIST_METHOD, None)
        except AuthError as exc:
            raise RuntimeError(f"{exc.code.name}: {exc.message}") from None
        self._sessions.add(self.server.request_context.session)
        return self.tools()

    async def _call_tool(self, name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        try:
            request = target_of_tool(name)
            text, options, data = check_arguments(name, arguments, self._schema_of(request))
            request.message.CopyFrom(pb.Message(role=pb.ROLE_USER, parts=[pb.Part(text=text)]))
            if data is not None:
                wire.python_to_value(data, request.message.parts.add().data)
            wire.dict_to_struct(options, request.options)
        except AgentError as exc:
            return _error(f"{exc.code.value}: {exc.message}")
        try:
            principal = await self._admit(INVOKE_METHOD, request)
        except AuthError as exc:
            return _error(f"{exc.code.name}: {exc.message}")
        code = "OK"
        try:
            self._check_options(request, options)
            return await self._run(request)
        except AgentError as exc:
            code = exc.code.value
            return _error(f"{exc.code.value}: {exc.message}")
        finally:
            self._guard.audit(principal=principal, method=INVOKE_METHOD, request=request,
                              decision=ALLOW, status=grpc.StatusCode[code])  # fmt: skip

    def _skill(self, request: pb.InvokeRequest) -> tuple[AgentEntry, pb.AgentSkill] | None:
        """The registry entry and card skill a skill tool's request names, when known."""
        entry = self._registry.get(request.agent) if request.agent else None
        if entry is None or entry.card is None:
            return None
        skill = next((s for s in entry.card.skills if s.id == request.skill), None)
        return None if skill is None else (entry, skill)

    def _schema_of(self, request: pb.InvokeRequest) -> Mapping[str, Any]:
        """The inputSchema of the tool ``request`` stands for (as tools/list gives it)."""
        if request.agent.startswith("workflow:"):
            return _WORKFLOW_SCHEMA
        found = self._skill(request)
        if found is None:
            return _SKILL_SCHEMA  # an unknown agent or skill: NOT_FOUND once admitted
        _, skill = found
        return skill_input_schema(
            wire.schema_from_proto(skill, "options_schema"),
            wire.schema_from_proto(skill, "input_schema"),
        )

    def _check_options(self, request: pb.InvokeRequest, options: Mapping[str, Any]) -> None:
        """The options against the skill's schema, before any call (as the agent would)."""
        found = self._skill(request)
        if found is not None and options:
            entry, skill = found
            check_options(
                wire.schema_from_proto(skill, "options_schema"),
                options,
                owner=f"skill {skill.id!r} of agent {entry.name!r}",
            )

    async def _run(self, request: pb.InvokeRequest) -> types.CallToolResult:
        self._dispatcher.check(request)  # NOT_FOUND for an unknown agent, skill or workflow
        context = self.server.request_context
        token = context.meta.progressToken if context.meta is not None else None
        if token is None:
            answer = await self._dispatcher.invoke(request, time_remaining=self._timeout)
            return _result(answer.response)
        done = 0
        final: pb.InvokeResponse | None = None
        async for event in self._dispatcher.stream(request, time_remaining=self._timeout):
            kind = event.WhichOneof("event")
            note: str | None = None
            if kind == "partial":
                note = " ".join(c.text for c in _text_of(event.partial.parts)) or None
            elif kind == "progress":
                step = event.progress
                note = f"step {step.step!r} {step.status}" + (
                    f": {step.message}" if step.message else ""
                )
            elif kind == "started":
                note = f"started on agent {event.started.agent!r}"
            elif kind == "error":
                note = event.error.message
            elif kind == "final":
                final = event.final
            if note is not None:
                done += 1
                await context.session.send_progress_notification(
                    token, done, message=note, related_request_id=str(context.request_id)
                )
        if final is None:
            return _error("INTERNAL: the call ended without a result")
        return _result(final)

    async def _watch_tools(self) -> None:
        """Announce ``tools/list_changed`` to listing sessions when the tool set changes."""
        seen = {tool.name for tool in self.tools()}
        while True:
            await asyncio.sleep(self._watch_interval)
            now = {tool.name for tool in self.tools()}
            if now == seen:
                continue
            seen = now
            for session in list(self._sessions):
                try:
                    await session.send_tool_list_changed()
                except Exception:  # a session gone away: the next one
                    self._sessions.discard(session)


def _result(response: pb.InvokeResponse) -> types.CallToolResult:
    contents: list[types.TextContent] = []
    for artifact in response.artifacts:
        contents += _text_of(artifact.parts)
    return types.CallToolResult(content=list(contents), isError=False)


def _error(message: str) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=message)], isError=True
    )
