"""The operator's web dashboard, read-only, at ``/dashboard/`` on the HTTP port.

Pages (one HTML shell, ``dashboard.js`` and ``dashboard.css``, shipped as
package data: nothing is fetched from elsewhere at run time):

- agents and their replicas: health, card, skills, breaker, in-flight calls,
  from the same :class:`~agentmesh.v1.gateway_pb2.AgentInfo` ListAgents serves,
  and each agent's calls, error rate and p50/p99 latency over the last
  ``dashboard_window`` seconds (:mod:`agentmesh.gateway.recent`, read from the
  gateway's own metrics);
- jobs, filtered by state, and one job's event log as it grows;
- declared workflows, each drawn as a graph of its steps;
- recent traces from the local OTLP receiver's span file
  (``dashboard_traces_file``, which ``agentmesh up`` sets), filtered by service,
  agent, status and duration, and one trace as a waterfall.

JSON under ``/dashboard/api/``; ``/dashboard/events`` pushes the agents'
status as server-sent events every ``dashboard_interval`` seconds.

Every request but the static shell is admitted by :meth:`Guard.admit` and
needs an operator (``scopes.operator: true``): credentials come as on the
other doors (``x-api-key``, ``authorization: Bearer``) or from the session
cookie ``POST /dashboard/session`` sets after checking a key. With
authentication off the dashboard answers loopback clients only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from agentmesh.gateway.auth import ANONYMOUS, AuthError, Principal
from agentmesh.gateway.guard import ALLOW, DENY, Guard
from agentmesh.gateway.jobs import JobManager
from agentmesh.gateway.recent import NOTHING, RecentCalls
from agentmesh.gateway.registry import Registry
from agentmesh.gateway.servicer import agent_info
from agentmesh.gateway.workflows import WorkflowCatalog
from agentmesh.gateway.workflows.validate import CompiledStep
from agentmesh.runtime.errors import AgentError
from agentmesh.telemetry.collector import SpanRecord, read_spans, traces
from agentmesh.telemetry.rpcstatus import STATUS_CODE_ATTRIBUTE
from agentmesh.telemetry.tracequery import (
    STATUS_CHOICES,
    TraceFilter,
    agents_of,
    duration_ns,
    grpc_code_name,
    newest_first,
    ordered,
    outcome,
    roots,
    select,
)
from agentmesh.v1 import messages_pb2 as pb

ASSETS = Path(__file__).with_name("dashboard_assets")
METHOD = "/agentmesh.dashboard/View"  # the name admission and the audit log see
COOKIE = "agentmesh_dashboard_key"
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
MAX_TRACES = 200
STATE_PREFIX = "TASK_STATE_"


def _dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": status, "status": code, "message": message}}, status)


_HTTP_STATUS = {
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
}


class Dashboard:
    """The dashboard's routes over the gateway's parts (see the module)."""

    def __init__(
        self,
        *,
        registry: Registry,
        jobs: JobManager,
        workflows: WorkflowCatalog,
        guard: Guard,
        traces_file: Path | None,
        interval: float = 1.0,
        window: float = 300.0,
    ) -> None:
        self._registry = registry
        self._recent = RecentCalls(window)
        self._sampler: asyncio.Task[None] | None = None
        self._jobs = jobs
        self._workflows = workflows
        self._guard = guard
        self._traces_file = traces_file
        self._interval = interval
        self._closing = asyncio.Event()

    def start(self) -> None:
        """Read the call metrics every step of the window, watched or not (so the
        window's start is at hand whenever the page is opened)."""
        if self._sampler is None:
            self._sampler = asyncio.create_task(self._sample(), name="dashboard-sampler")

    async def _sample(self) -> None:
        while not self._closing.is_set():
            self._recent.sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self._recent.step)

    def close(self) -> None:
        """End the open event streams (before the HTTP port stops: none holds it up)."""
        self._closing.set()
        if self._sampler is not None:
            self._sampler.cancel()

    def routes(self) -> list[BaseRoute]:
        api = [
            Route("/agents", self._guarded(self.agents)),
            Route("/jobs", self._guarded(self.jobs)),
            Route("/jobs/{job_id}", self._guarded(self.job)),
            Route("/jobs/{job_id}/events", self._guarded(self.job_events)),
            Route("/workflows", self._guarded(self.workflows)),
            Route("/traces", self._guarded(self.traces)),
            Route("/traces/{trace_id}", self._guarded(self.trace)),
        ]
        return [
            Mount(
                "/dashboard",
                routes=[
                    Route("/", self.index),
                    Route("/session", self.session, methods=["POST", "DELETE"]),
                    Route("/events", self._guarded(self.events)),
                    Mount("/api", routes=api),
                    Mount("/static", StaticFiles(directory=ASSETS)),
                ],
            ),
            Route("/dashboard", _to_index),
        ]

    # -- admission -------------------------------------------------------------

    async def _admit(self, request: Request, key: str | None = None) -> Principal:
        """The operator making ``request``; raises :class:`AuthError` otherwise."""
        guard = self._guard
        metadata = [(k.lower(), v) for k, v in request.headers.items()]
        key = key or request.cookies.get(COOKIE)
        if key and not any(k in ("x-api-key", "authorization") for k, _ in metadata):
            metadata.append(("x-api-key", key))
        client = request.client
        peer = f"ipv4:{client.host}:{client.port}" if client else "unknown"
        try:
            principal = await guard.admit(METHOD, metadata, None, lambda: peer)
            if principal is ANONYMOUS and not guard.authenticator.configured:
                if client is None or client.host not in LOOPBACK:
                    raise AuthError(
                        grpc.StatusCode.PERMISSION_DENIED,
                        "with authentication off the dashboard answers loopback clients only;"
                        " configure keys (auth_keys_file) and use one with operator: true",
                    )
            elif not principal.scopes.operator:
                raise AuthError(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"{principal.id} is no operator: the dashboard needs a key whose scopes"
                    " say operator: true",
                )
        except AuthError as exc:
            who = exc.principal if exc.principal is not None else None
            guard.audit(principal=who, method=METHOD, request=None, decision=DENY,
                        status=exc.code, metadata=metadata)  # fmt: skip
            raise
        guard.audit(principal=principal.id, method=METHOD, request=None, decision=ALLOW,
                    status=grpc.StatusCode.OK, metadata=metadata)  # fmt: skip
        return principal

    def _guarded(
        self, page: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def admitted(request: Request) -> Response:
            try:
                await self._admit(request)
                return await page(request)
            except AuthError as exc:
                headers = {}
                if exc.code == grpc.StatusCode.UNAUTHENTICATED:
                    headers["www-authenticate"] = 'Bearer realm="agentmesh"'
                response = _error(_HTTP_STATUS.get(exc.code, 403), exc.code.name, exc.message)
                response.headers.update(headers)
                return response
            except AgentError as exc:  # a job that is not there, a bad id
                status = {"NOT_FOUND": 404, "INVALID_ARGUMENT": 400}.get(exc.code.name, 500)
                return _error(status, exc.code.name, exc.message)

        return admitted

    async def session(self, request: Request) -> Response:
        """POST ``key=...`` (form or JSON): check it and keep it in an HttpOnly cookie;
        DELETE: forget it."""
        response = JSONResponse({"ok": True})
        if request.method == "DELETE":
            response.delete_cookie(COOKIE, path="/dashboard")
            return response
        key = ""
        if request.headers.get("content-type", "").startswith("application/json"):
            with contextlib.suppress(ValueError):
                body = await request.json()
                key = str(body.get("key", "")) if isinstance(body, dict) else ""
        else:
            key = str((await request.form()).get("key", ""))
        key = key.strip()
        if not key:
            return _error(400, "INVALID_ARGUMENT", "key: give an API key with operator: true")
        try:
            principal = await self._admit(request, key=key)
        except AuthError as exc:
            return _error(_HTTP_STATUS.get(exc.code, 403), exc.code.name, exc.message)
        response = JSONResponse({"ok": True, "principal": principal.id})
        response.set_cookie(
            COOKIE, key, path="/dashboard", httponly=True, samesite="strict",
            secure=request.url.scheme == "https",
        )  # fmt: skip
        return response

    # -- pages -----------------------------------------------------------------

    async def index(self, request: Request) -> Response:
        return FileResponse(ASSETS / "index.html", headers={"cache-control": "no-store"})

    def agent_view(self) -> dict[str, Any]:
        """Every agent's ``AgentInfo`` and its ``recent`` figures, and the ``window``."""
        covered, figures = self._recent.figures()
        agents = [
            {**_dict(agent_info(entry)), "recent": figures.get(entry.name, NOTHING).as_dict()}
            for entry in self._registry.entries
        ]
        window = {"seconds": self._recent.window, "covered_seconds": round(covered, 3)}
        return {"agents": agents, "window": window}

    async def agents(self, request: Request) -> Response:
        return JSONResponse(self.agent_view())

    async def jobs(self, request: Request) -> Response:
        state_name = request.query_params.get("state", "").strip().upper()
        state = 0
        if state_name:
            full = state_name if state_name.startswith(STATE_PREFIX) else STATE_PREFIX + state_name
            try:
                state = pb.TaskState.Value(full)
            except ValueError:
                names = [n for n, value in pb.TaskState.items() if value]
                known = ", ".join(n.removeprefix(STATE_PREFIX).lower() for n in names)
                problem = f"state: {state_name.lower()!r} is none of {known}"
                return _error(400, "INVALID_ARGUMENT", problem)
        limit = _int(request.query_params.get("limit"), 100)
        jobs = await self._jobs.list(limit, state, viewer=None)
        return JSONResponse({"jobs": [_dict(job) for job in jobs]})

    async def job(self, request: Request) -> Response:
        job = await self._jobs.get(request.path_params["job_id"], viewer=None)
        return JSONResponse({"job": _dict(job)})

    async def job_events(self, request: Request) -> Response:
        """The job's event log as server-sent events, live until its terminal state."""
        job_id = request.path_params["job_id"]
        await self._jobs.get(job_id, viewer=None)  # NOT_FOUND before the stream starts
        events = self._jobs.watch(job_id, 0, viewer=None)

        async def stream() -> AsyncIterator[str]:
            closing = asyncio.ensure_future(self._closing.wait())
            following: asyncio.Future[Any] | None = None
            try:
                while True:
                    following = asyncio.ensure_future(anext(events))
                    await asyncio.wait([following, closing], return_when=asyncio.FIRST_COMPLETED)
                    if not following.done():
                        return
                    try:
                        event = following.result()
                    except StopAsyncIteration:
                        break
                    yield f"event: job\ndata: {json.dumps(_dict(event))}\n\n"
                yield "event: end\ndata: {}\n\n"
            finally:
                # Closing, or the browser gone (this generator cancelled): the pending
                # read ends before the log's generator is closed (it refuses while running).
                closing.cancel()
                if following is not None and not following.done():
                    following.cancel()
                    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                        await following
                if isinstance(events, AsyncGenerator):
                    await events.aclose()

        return _sse(stream())

    async def workflows(self, request: Request) -> Response:
        out = []
        for name in self._workflows.names():
            workflow = self._workflows.get(name)
            out.append(
                {
                    "name": workflow.name,
                    "description": workflow.description,
                    "output": workflow.output,
                    "steps": [_step(step) for step in workflow.steps],
                }
            )
        return JSONResponse({"workflows": out})

    def _grouped(self) -> dict[str, list[SpanRecord]]:
        if self._traces_file is None:
            return {}
        return traces(read_spans(self._traces_file))

    async def traces(self, request: Request) -> Response:
        query = request.query_params
        status = query.get("status", "").strip().lower() or None
        if status is not None and status not in STATUS_CHOICES:
            return _error(400, "INVALID_ARGUMENT",
                          f"status: {status!r} is not ok, error or a gRPC code name")  # fmt: skip
        min_ms = query.get("min_ms", "").strip()
        minimum: float | None = None
        if min_ms:
            try:
                minimum = float(min_ms)
            except ValueError:
                minimum = -1.0
            if not minimum >= 0:  # also refuses nan
                return _error(400, "INVALID_ARGUMENT", f"min_ms: {min_ms!r} is not a number >= 0")
        wanted = TraceFilter(
            service=query.get("service", "").strip() or None,
            status=status,
            min_ms=minimum,
            agent=query.get("agent", "").strip() or None,
        )
        grouped = await asyncio.to_thread(self._grouped)
        kept = newest_first(select(grouped, wanted))
        limit = min(_int(query.get("limit"), 50), MAX_TRACES)
        return JSONResponse(
            {
                "source": str(self._traces_file) if self._traces_file is not None else None,
                "total": len(grouped),
                "traces": [_summary(spans) for spans in kept[:limit]],
            }
        )

    async def trace(self, request: Request) -> Response:
        wanted = request.path_params["trace_id"].lower()
        grouped = await asyncio.to_thread(self._grouped)
        matches = [tid for tid in grouped if tid.startswith(wanted)]
        if len(matches) != 1:
            why = "no trace" if not matches else f"{len(matches)} traces"
            return _error(404, "NOT_FOUND", f"{why} with id {wanted!r}")
        spans = grouped[matches[0]]
        start = min(s.start_ns for s in spans)
        rows = [
            {
                "depth": depth,
                "span_id": span.span_id,
                "parent_id": span.parent_id,
                "service": span.service,
                "name": span.name,
                "kind": span.kind,
                "offset_ms": (span.start_ns - start) / 1e6,
                "duration_ms": span.duration_ns / 1e6,
                "status": _span_status(span),
                "error": span.status == "ERROR",
                "attributes": span.attributes,
            }
            for depth, span in ordered(spans)
        ]
        return JSONResponse({**_summary(spans), "spans": rows})

    async def events(self, request: Request) -> Response:
        """The agents' status every ``interval`` seconds, as server-sent events."""

        async def stream() -> AsyncIterator[str]:
            yield "retry: 2000\n\n"
            while not self._closing.is_set():
                yield f"event: agents\ndata: {json.dumps(self.agent_view())}\n\n"
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), self._interval)

        return _sse(stream())


async def _to_index(request: Request) -> Response:
    return Response(status_code=307, headers={"location": "/dashboard/"})


def _sse(stream: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
    )


def _int(value: str | None, default: int) -> int:
    try:
        number = int(value) if value else default
    except ValueError:
        return default
    return max(1, number)


def _step(step: CompiledStep) -> dict[str, Any]:
    return {
        "id": step.id,
        "kind": str(step.kind),
        "agent": step.agent,
        "skill": step.skill,
        "when": step.when.source if step.when is not None else None,
        "workflow": step.workflow.name if step.workflow is not None else None,
        "fallback": "/".join(step.fallback) if step.fallback is not None else None,
        "retry": step.policy.retry,
        "children": [_step(child) for child in step.children],
    }


def _span_status(span: SpanRecord) -> str:
    code = span.attributes.get(STATUS_CODE_ATTRIBUTE)
    label = span.status if code is None else grpc_code_name(code)
    if span.status == "ERROR" and span.status_message:
        label = span.status_message
    return label


def _summary(spans: Sequence[SpanRecord]) -> dict[str, Any]:
    code, failed = outcome(spans)
    root = roots(spans)[0]
    return {
        "trace_id": spans[0].trace_id,
        "start_ms": min(s.start_ns for s in spans) / 1e6,
        "request": root.name,
        "services": list(dict.fromkeys(s.service for s in spans)),
        "agents": agents_of(spans),
        "spans": len(spans),
        "duration_ms": duration_ns(spans) / 1e6,
        "status": ("ERROR" if code == "OK" else code) if failed else code,
        "failed": failed,
    }
