"""``grpc.health.v1.Health`` for every agentmesh server: Check, List and Watch.

Unlike grpcio-health-checking's servicer it answers ``List`` (the status of
every service), and it can end its ``Watch`` streams: when the server drains,
every watcher gets NOT_SERVING (:meth:`HealthService.drain`), and when the
server stops taking calls, each stream closes with OK
(:meth:`HealthService.end_watches`). A watch stream is a call like any other,
so one left open would hold the drain for its whole grace period; closed, an
idle server stops at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVING: int = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING: int = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN: int = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN

Status = int  # a health_pb2.HealthCheckResponse.ServingStatus value
Context = grpc.aio.ServicerContext[Any, Any]


class HealthService(health_pb2_grpc.HealthServicer):  # type: ignore[misc]  # no stubs
    """Statuses by service name ("" is the whole server); drained once for good."""

    def __init__(self) -> None:
        self._statuses: dict[str, Status] = {"": SERVING}
        self._changed = asyncio.Event()  # replaced after each change; watchers hold the old one
        self._draining = False
        self._ended = False  # Watch streams end (new ones after their first reply)

    @property
    def statuses(self) -> Mapping[str, Status]:
        return dict(self._statuses)

    def set(self, service: str, status: Status) -> None:
        """Set ``service``'s status (ignored once draining: it stays NOT_SERVING)."""
        if not self._draining:
            self._statuses[service] = status
            self._notify()

    def drain(self) -> None:
        """Every service NOT_SERVING from now on; Watch streams send it and end."""
        if self._draining:
            return
        self._draining = True
        for service in self._statuses:
            self._statuses[service] = NOT_SERVING
        self._notify()

    def end_watches(self) -> None:
        """End every Watch stream, now and from now on, after its latest status."""
        self._ended = True
        self._notify()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: Context
    ) -> health_pb2.HealthCheckResponse:
        status = self._statuses.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def List(
        self, request: health_pb2.HealthListRequest, context: Context
    ) -> health_pb2.HealthListResponse:
        return health_pb2.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=status)
                for name, status in self._statuses.items()
            }
        )

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: Context
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        last: Status | None = None
        while True:
            changed = self._changed  # taken before reading: no change can slip by
            status = self._statuses.get(request.service, SERVICE_UNKNOWN)
            if status != last:
                yield health_pb2.HealthCheckResponse(status=status)
                last = status
                # Read again before ending or waiting: while this stream was suspended
                # at the yield (its write under way), the server may have drained and
                # ended the watches, and the watcher must still get NOT_SERVING.
                continue
            if self._ended:
                return
            await changed.wait()


def add_health(service: HealthService, server: grpc.aio.Server) -> None:
    health_pb2_grpc.add_HealthServicer_to_server(service, server)
