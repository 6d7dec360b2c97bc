"""The gateway's HTTP port: A2A (JSON-RPC, HTTP+JSON), per-agent A2A agents, and MCP.

Routes (``BASE`` is ``http(s)://host:http_port``):

- ``GET /.well-known/agent-card.json``: the mesh's card (interfaces, security schemes);
- ``POST /``: A2A JSON-RPC; ``/rest/...``: A2A HTTP+JSON (``/rest/message:send`` ...);
- ``/agents/NAME/``: the same three for one agent or declared workflow
  (``/agents/NAME/.well-known/agent-card.json``, ``POST /agents/NAME/``,
  ``/agents/NAME/rest/...``), whose messages go to that agent;
- ``/mcp``: the Model Context Protocol (streamable HTTP);
- ``/dashboard/``: the operator's web dashboard (:mod:`agentmesh.gateway.http.dashboard`).

The A2A bindings are a2a-sdk's own Starlette routes over the gateway's
:class:`MeshRequestHandler` (the gRPC binding's handler); admission is
:class:`~agentmesh.gateway.http.door.GuardMiddleware`'s. :class:`HttpServer`
serves it with uvicorn inside the gateway's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import uvicorn
from a2a.server.context import ServerCallContext
from a2a.server.request_handlers.response_helpers import agent_card_to_dict
from a2a.server.routes import (
    DefaultServerCallContextBuilder,
    create_jsonrpc_routes,
    create_rest_routes,
)
from a2a.utils.constants import AGENT_CARD_WELL_KNOWN_PATH
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from agentmesh.gateway.a2a.handler import AGENT_STATE, MeshRequestHandler
from agentmesh.gateway.guard import Guard
from agentmesh.gateway.http.dashboard import Dashboard
from agentmesh.gateway.http.door import GuardMiddleware
from agentmesh.gateway.mcp import McpService
from agentmesh.runtime.errors import NotFound


class _ContextBuilder(DefaultServerCallContextBuilder):
    """a2a-sdk's call context, naming the agent whose endpoint was called."""

    def build(self, request: Request) -> ServerCallContext:
        context = super().build(request)
        name = request.path_params.get("name")
        if isinstance(name, str):
            context.state[AGENT_STATE] = name
        return context


def a2a_routes(handler: MeshRequestHandler) -> list[BaseRoute]:
    """The mesh's A2A routes and, under ``/agents/NAME``, each agent's."""
    builder = _ContextBuilder()

    async def card(request: Request) -> Response:
        name = request.path_params.get("name")
        try:
            served = handler.card(name if isinstance(name, str) else None, extended=False)
        except NotFound as exc:
            body = {"error": {"code": 404, "status": "NOT_FOUND", "message": exc.message}}
            return JSONResponse(body, status_code=404)
        return JSONResponse(agent_card_to_dict(served))

    jsonrpc = create_jsonrpc_routes(handler, "/", context_builder=builder)
    rest = Mount("/rest", routes=create_rest_routes(handler, context_builder=builder))
    own: list[BaseRoute] = [
        Route(AGENT_CARD_WELL_KNOWN_PATH, card, methods=["GET"]),
        *jsonrpc,
        rest,
    ]
    return [*own[:1], Mount("/agents/{name}", routes=own), *own[1:]]


def http_app(
    handler: MeshRequestHandler,
    guard: Guard,
    mcp: McpService | None,
    *,
    max_body_bytes: int,
    dashboard: Dashboard | None = None,
) -> Any:
    """The HTTP port's ASGI application (see the module)."""
    routes = a2a_routes(handler)
    if mcp is not None:
        routes.insert(0, Route("/mcp", mcp, methods=["GET", "POST", "DELETE"]))
    if dashboard is not None:
        routes[0:0] = dashboard.routes()
    app = Starlette(routes=routes)
    return GuardMiddleware(app, guard, aimed=handler.aimed, max_body_bytes=max_body_bytes)


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the gateway's own signal handling stops this server


class HttpServer:
    """uvicorn serving ``app`` in the running loop, on a socket bound up front."""

    def __init__(
        self,
        app: Any,
        *,
        host: str,
        port: int,
        tls: tuple[Path, Path, Path | None] | None = None,
        lifespan: Callable[[], contextlib.AbstractAsyncContextManager[None]] | None = None,
    ) -> None:
        """``port`` 0: a free one; ``tls``: certificate, key and (for mTLS) client CA
        files; ``lifespan``: what runs while the server does (the MCP transport)."""
        self._app = app
        self._host = host
        self._port = port
        self._tls = tls
        self._lifespan = lifespan
        self._task: asyncio.Task[None] | None = None
        self._server: _Uvicorn | None = None
        self._stack = contextlib.AsyncExitStack()
        self.port: int | None = None

    @property
    def scheme(self) -> str:
        return "https" if self._tls is not None else "http"

    async def start(self) -> int:
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, self._port))
        except OSError:
            sock.close()
            raise
        sock.listen(128)  # connections wait in the backlog until uvicorn accepts
        sock.setblocking(False)
        self.port = int(sock.getsockname()[1])
        options: dict[str, Any] = {}
        if self._tls is not None:
            cert, key, client_ca = self._tls
            options.update(ssl_certfile=str(cert), ssl_keyfile=str(key))
            if client_ca is not None:
                import ssl

                options.update(ssl_ca_certs=str(client_ca), ssl_cert_reqs=ssl.CERT_REQUIRED)
        config = uvicorn.Config(
            self._app,
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=1,
            **options,
        )
        if self._lifespan is not None:
            await self._hold(self._lifespan)
        self._server = _Uvicorn(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="http-port")
        self._stack.callback(sock.close)
        return self.port

    async def _hold(
        self, lifespan: Callable[[], contextlib.AbstractAsyncContextManager[None]]
    ) -> None:
        """Enter ``lifespan`` in a task of its own (its cancel scopes stay in one task)
        until :meth:`stop`."""
        entered, stop = asyncio.Event(), asyncio.Event()

        async def hold() -> None:
            async with lifespan():
                entered.set()
                await stop.wait()

        task = asyncio.create_task(hold(), name="http-lifespan")
        waiter = asyncio.create_task(entered.wait())
        await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if task.done():
            task.result()  # raises what failed while entering

        async def release() -> None:
            stop.set()
            await task

        self._stack.push_async_callback(release)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._stack.aclose()

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[int]:
        port = await self.start()
        try:
            yield port
        finally:
            await self.stop()
