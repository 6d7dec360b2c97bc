"""The stdio side of ``agentmesh mcp``: an MCP server whose tools are the gateway's.

Imported only when the command runs (the ``mcp`` SDK is not light to import).
"""

from __future__ import annotations

import contextlib
from typing import Any

import httpx
from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.session import ServerSession
from mcp.server.stdio import stdio_server


class Bridge:
    """A stdio server whose tools are the gateway's (through one upstream session)."""

    def __init__(self) -> None:
        self.upstream: ClientSession | None = None
        self.listening: list[ServerSession] = []  # stdio sessions that listed the tools
        self.server: Server[Any, Any] = Server("agentmesh")
        self.server.list_tools()(self.list_tools)  # type: ignore[no-untyped-call]
        self.server.call_tool(validate_input=False)(self.call_tool)

    def _session(self) -> ClientSession:
        if self.upstream is None:
            raise RuntimeError("not connected to the gateway")
        return self.upstream

    async def list_tools(self) -> list[types.Tool]:
        session = self.server.request_context.session
        if session not in self.listening:
            self.listening.append(session)
        return (await self._session().list_tools()).tools

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        context = self.server.request_context
        token = context.meta.progressToken if context.meta is not None else None

        async def progress(progress: float, total: float | None, message: str | None) -> None:
            if token is not None:
                await context.session.send_progress_notification(
                    token, progress, total, message, related_request_id=str(context.request_id)
                )

        return await self._session().call_tool(
            name, arguments, progress_callback=progress if token is not None else None
        )

    async def on_message(self, message: Any) -> None:
        """The gateway's notifications: a tool list change goes on to the stdio client."""
        if isinstance(message, types.ServerNotification) and isinstance(
            message.root, types.ToolListChangedNotification
        ):
            for session in self.listening:
                with contextlib.suppress(Exception):  # that client has gone
                    await session.send_tool_list_changed()


async def serve_stdio(url: str, headers: dict[str, str]) -> None:
    """Serve on stdin/stdout until the client closes them; ``headers``: the credentials."""
    bridge = Bridge()
    async with (
        httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(30, read=300)) as http,
        streamable_http_client(url, http_client=http) as (read, write, _),
        ClientSession(read, write, message_handler=bridge.on_message) as session,
    ):
        await session.initialize()
        bridge.upstream = session
        options = bridge.server.create_initialization_options(
            notification_options=NotificationOptions(tools_changed=True)
        )
        async with stdio_server() as (stdin, stdout):
            await bridge.server.run(stdin, stdout, options)
