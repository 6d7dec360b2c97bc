"""The one gRPC server bootstrap every agentmesh service uses.

:class:`GrpcServer` owns a ``grpc.aio`` server with ``grpc.health.v1``,
server reflection, message-size limits, keepalive and a graceful drain:

1. health turns NOT_SERVING for every service (load balancers stop routing);
2. after ``drain_delay`` seconds new calls are refused, and health Watch
   streams end, so that they do not count as calls in flight;
3. in-flight calls get ``grace_period`` seconds to finish, then are cancelled
   (logged as "grace period over"); an idle server stops at once.

``serve_until_signal`` runs that drain on SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from agentmesh.runtime.decoding import RequestDecodingInterceptor
from agentmesh.runtime.health import SERVING, HealthService, add_health
from agentmesh.runtime.limits import LimitsInterceptor
from agentmesh.runtime.settings import ServerSettings
from agentmesh.runtime.tls import TLSConfigError, server_credentials
from agentmesh.telemetry.handlers import MethodInterceptor, chained
from agentmesh.telemetry.interceptor import TelemetryInterceptor

log = logging.getLogger("agentmesh.server")

ReflectionV1Service = "grpc.reflection.v1.ServerReflection"


@dataclass(frozen=True, slots=True)
class ServiceBinding:
    """A servicer to mount: its full service name and how to add it."""

    name: str
    add_to: Callable[[grpc.aio.Server], None]


class ServerStartError(RuntimeError):
    """The server could not listen on its address."""


def server_options(settings: ServerSettings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", int(settings.keepalive_time * 1000)),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 5000),
        ("grpc.http2.max_ping_strikes", 0),
        # Linux SO_REUSEPORT would let a second server share a busy port and
        # receive half the traffic; a clash must fail loudly instead.
        ("grpc.so_reuseport", 0),
        # Calls that arrived but that the server loop has not picked up yet: past gRPC's
        # default (1,000) a burst of new calls has some of them CANCELLED at random.
        ("grpc.server.max_pending_requests", settings.max_pending_requests),
        ("grpc.server.max_pending_requests_hard_limit", settings.max_pending_requests),
    ]


class GrpcServer:
    """A started-on-demand grpc.aio server with health, reflection and drain."""

    def __init__(
        self,
        settings: ServerSettings,
        services: Sequence[ServiceBinding],
        *,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        on_stopped: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self._services = list(services)
        # Telemetry first: its span is current while later interceptors run.
        # Then requests that do not parse are refused, before anything reads
        # them. Limits last: callers are authenticated and admitted before their
        # request's shape is looked at.
        self._interceptors = [
            TelemetryInterceptor(),
            RequestDecodingInterceptor(),
            *interceptors,
            LimitsInterceptor(settings),
        ]
        self._on_stopped = on_stopped
        self._server: grpc.aio.Server | None = None
        self._health = HealthService()
        self._stopping: asyncio.Task[None] | None = None
        self._health_server: grpc.aio.Server | None = None
        self.port = 0
        self.health_port: int | None = None  # the plaintext health-only port, when serving one

    async def start(self) -> int:
        """Listen and mark every service SERVING; returns the bound port."""
        server = grpc.aio.server(
            # One intercept_service per call for the whole chain, not one per interceptor.
            interceptors=chained(self._interceptors),
            options=server_options(self.settings),
            maximum_concurrent_rpcs=self.settings.max_concurrent_rpcs,
        )
        self._method_table().install(server)
        try:
            credentials = server_credentials(self.settings)
        except TLSConfigError as exc:
            raise ServerStartError(str(exc)) from None
        port = _listen(server, self.settings.address, credentials)
        if credentials is not None and self.settings.health_port is not None:
            # Kubelet's gRPC probes cannot speak TLS: health alone, in plaintext.
            self._health_server = grpc.aio.server(options=server_options(self.settings))
            add_health(self._health, self._health_server)
            self.health_port = _listen(
                self._health_server, f"{self.settings.host}:{self.settings.health_port}", None
            )
            await self._health_server.start()
        await server.start()
        self._server, self.port = server, port
        for name in ("", *(s.name for s in self._services)):
            self._health.set(name, SERVING)
        return port

    def _method_table(self) -> MethodTable:
        """Every method this server serves: its services, health and reflection."""
        table = MethodTable()
        for service in self._services:
            service.add_to(table.server)
        add_health(self._health, table.server)
        if self.settings.reflection:
            names = [s.name for s in self._services]
            listed = [*names, health.SERVICE_NAME, reflection.SERVICE_NAME, ReflectionV1Service]
            _enable_reflection(table.server, listed)
        return table

    def served_handler(self, method: str) -> grpc.RpcMethodHandler[Any, Any] | None:
        """``method``'s handler as a call finds it, inside every interceptor of this server.

        Built afresh, without listening: it lets a benchmark (or a test) run the whole
        handler stack of a method in process.
        """
        handler = self._method_table().handler(method)
        if handler is None:
            return None
        details = _CallDetails(method)
        for interceptor in reversed(self._interceptors):
            if not isinstance(interceptor, MethodInterceptor):
                raise TypeError(f"{type(interceptor).__name__} is not a MethodInterceptor")
            handler = interceptor.intercept(details, handler)
        return handler

    async def stop(self, grace: float | None = None) -> None:
        """Drain and stop (idempotent; concurrent callers share one drain)."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._drain(grace))
        await asyncio.shield(self._stopping)

    async def _drain(self, grace: float | None) -> None:
        if self._server is None:
            return
        grace = self.settings.grace_period if grace is None else grace
        log.info("draining", extra={"drain_delay": self.settings.drain_delay, "grace": grace})
        self._health.drain()
        if self.settings.drain_delay:
            await asyncio.sleep(self.settings.drain_delay)
        self._health.end_watches()
        stopping = asyncio.ensure_future(self._server.stop(grace))
        if grace:
            await asyncio.wait([stopping], timeout=grace)
            if not stopping.done():
                log.warning(
                    "grace period over: cancelling the calls still running", extra={"grace": grace}
                )
        await stopping
        if self._health_server is not None:
            await self._health_server.stop(0)
        if self._on_stopped is not None:
            await self._on_stopped()
        log.info("stopped")

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    async def serve_until_signal(self) -> None:
        """Start, then drain and stop on SIGTERM or SIGINT (a second signal skips the grace)."""
        loop = asyncio.get_running_loop()
        signals = 0
        pending: set[asyncio.Future[None]] = set()

        def on_signal(signum: int) -> None:
            nonlocal signals
            signals += 1
            log.info("signal received", extra={"signal": signal.Signals(signum).name})
            grace = None if signals == 1 else 0.0
            # A second signal starts a zero-grace stop of the underlying server.
            if signals == 1:
                pending.add(asyncio.ensure_future(self.stop(grace)))
            elif self._server is not None:
                pending.add(asyncio.ensure_future(self._server.stop(grace)))

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        try:
            await self.start()
            # Everything built at start-up (modules, settings, channels) lives as long as
            # the process: out of the collector's sight, a full collection no longer walks
            # it, which otherwise shows as a multi-millisecond pause in the latency tail.
            gc.freeze()
            log.info("serving", extra={"address": f"{self.settings.host}:{self.port}"})
            await self.wait_for_termination()
            if self._stopping is not None:
                await self._stopping
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)


class MethodTable(grpc.GenericRpcHandler):
    """Every method a server serves, in one dict, mounted as its only generic handler.

    Generated ``add_*_to_server`` functions register each method with the
    server as well (grpcio 1.6x+). grpc.aio then keeps one pending request per
    registered method and, for every call it accepts, waits on all of them
    (``asyncio.wait`` over ~30 futures on the gateway: a third of the Python
    calls the gateway made per request beyond a bare proxy). Here the
    services are added to :attr:`server`, a stand-in that collects their
    handlers; :meth:`install` mounts them on the real server as one generic
    handler that finds a method with one lookup.
    """

    def __init__(self) -> None:
        self._methods: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        self._generic: list[grpc.GenericRpcHandler] = []
        self.server: Any = _Collecting(self)

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        return self._methods.get(handler_call_details.method)

    def handler(self, method: str) -> grpc.RpcMethodHandler[Any, Any] | None:
        """The handler of the full method name ``method`` (``/package.Service/Method``)."""
        return self._methods.get(method)

    def add_methods(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        for name, handler in handlers.items():
            self._methods[f"/{service}/{name}"] = handler

    def add_generic(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._generic.extend(handlers)

    def install(self, server: grpc.aio.Server) -> None:
        """Mount the table on ``server`` first, then the generic handlers added directly
        (asked only for methods the table lacks)."""
        server.add_generic_rpc_handlers((self, *self._generic))


class _CallDetails(grpc.HandlerCallDetails):
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


class _Collecting:
    """What a generated ``add_*_to_server`` needs of a server, feeding a :class:`MethodTable`."""

    def __init__(self, table: MethodTable) -> None:
        self._table = table

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        self._table.add_methods(service, handlers)

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        # The generated code adds a generic handler for the same methods it registers:
        # kept behind the table, it answers only what the table does not know.
        self._table.add_generic(handlers)


def _listen(
    server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None
) -> int:
    """Bind ``address`` (TLS when ``credentials`` are given); the bound port."""
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise ServerStartError(f"cannot listen on {address}: {exc}") from None
    if port == 0:
        raise ServerStartError(f"cannot listen on {address}")
    return port


def _enable_reflection(server: _Collecting, listed: Sequence[str]) -> None:
    """Serve reflection under its v1alpha name and its v1 name (wire-identical).

    grpcio-reflection only ships v1alpha; grpcurl, buf curl and Postman try v1
    first. The request and response messages of both versions are identical on
    the wire, so the v1alpha servicer answers v1 calls unchanged. The v1
    service's descriptor (v1alpha's, renamed) joins the default pool so that
    reflection can describe it like every service it lists.
    """
    _register_reflection_v1_descriptor()
    servicer = reflection.aio.ReflectionServicer(listed)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_registered_method_handlers(ReflectionV1Service, {"ServerReflectionInfo": handler})


_V1_FILE = "grpc/reflection/v1/reflection.proto"


def _register_reflection_v1_descriptor() -> None:
    pool = descriptor_pool.Default()
    with contextlib.suppress(KeyError):
        pool.FindFileByName(_V1_FILE)
        return
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    old, new = proto.package, "grpc.reflection.v1"
    proto.name, proto.package = _V1_FILE, new
    proto.options.Clear()  # v1alpha's Java/C# package options do not apply
    for message in proto.message_type:
        for field in message.field:
            if field.type_name.startswith(f".{old}."):
                field.type_name = f".{new}." + field.type_name.removeprefix(f".{old}.")
    for service in proto.service:
        for method in service.method:
            method.input_type = f".{new}." + method.input_type.removeprefix(f".{old}.")
            method.output_type = f".{new}." + method.output_type.removeprefix(f".{old}.")
    pool.AddSerializedFile(proto.SerializeToString())


async def run_server(server: GrpcServer) -> None:
    """Serve until a signal, logging a clean error when the port is taken."""
    try:
        await server.serve_until_signal()
    except ServerStartError as exc:
        log.error(str(exc))
        raise SystemExit(2) from None
    finally:
        with contextlib.suppress(Exception):
            await server.stop(0)
