"""Assembling and running the gateway process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence

import grpc
import redis.asyncio as aioredis
from a2a.types import a2a_pb2 as a2a_types

from agentmesh.gateway.a2a import a2a_binding
from agentmesh.gateway.a2a.convert import work_for
from agentmesh.gateway.a2a.handler import MeshRequestHandler
from agentmesh.gateway.a2a.push import PushNotifier
from agentmesh.gateway.auth import AuthConfigError, Authenticator
from agentmesh.gateway.cache import MemoryCache, RedisCache, ResponseCache
from agentmesh.gateway.config import (
    ConfigError,
    GatewayConfig,
    GatewaySettings,
    load_config,
    session_policy,
)
from agentmesh.gateway.dispatch import Dispatcher
from agentmesh.gateway.fanout import FanOut, FanOutLimits
from agentmesh.gateway.guard import AuditLog, Guard, GuardInterceptor
from agentmesh.gateway.http import HttpServer, http_app
from agentmesh.gateway.http.dashboard import Dashboard
from agentmesh.gateway.jobs import JobManager, JobSettings
from agentmesh.gateway.jobstore import JobStore, MemoryJobStore, RedisJobStore
from agentmesh.gateway.mcp import McpService
from agentmesh.gateway.policy import RetryPolicy
from agentmesh.gateway.registry import Registry
from agentmesh.gateway.resilience.ratelimit import RateLimiter
from agentmesh.gateway.resilience.shared import BreakerSync
from agentmesh.gateway.routing import Router
from agentmesh.gateway.servicer import GatewayServicer
from agentmesh.gateway.sessions import (
    Conversations,
    MemorySessionStore,
    RedisSessionStore,
    SessionStore,
)
from agentmesh.gateway.upstream import Upstream
from agentmesh.gateway.workflows import WorkflowService, load_catalog
from agentmesh.runtime.errors import AgentError
from agentmesh.runtime.logs import configure_logging
from agentmesh.runtime.redisconn import open_redis
from agentmesh.runtime.server import GrpcServer, ServiceBinding, run_server
from agentmesh.runtime.settings import load_settings
from agentmesh.runtime.tls import TLSConfigError
from agentmesh.telemetry import start_telemetry
from agentmesh.v1 import gateway_pb2, gateway_pb2_grpc

GATEWAY_SERVICE = "agentmesh.v1.Gateway"

log = logging.getLogger("agentmesh.gateway")


def redis_client(settings: GatewaySettings) -> aioredis.Redis | None:
    """The gateway's Redis client (``redis://`` or TLS ``rediss://``), or None without one."""
    if not settings.redis_url:
        return None
    password = settings.redis_password
    try:
        return open_redis(
            settings.redis_url,
            max_connections=settings.redis_max_connections,
            password=password.get_secret_value() if password is not None else None,
            password_file=settings.redis_password_file,
            tls_ca_file=settings.redis_tls_ca_file,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


class Gateway:
    """The gateway's parts, started and stopped together (build it inside a running loop)."""

    def __init__(self, settings: GatewaySettings, config: GatewayConfig) -> None:
        self.settings = settings
        # Declared workflows first: a bad one stops the gateway before it opens anything.
        workflows = load_catalog(config, settings)
        self.redis = redis_client(settings)
        # With Redis, every replica's breakers open and close together.
        self.registry = Registry(
            config,
            settings,
            breaker_sync=BreakerSync(self.redis) if self.redis is not None else None,
        )
        self.upstream = Upstream(settings, self.registry)
        self.router = Router(self.registry, self.upstream, config)
        self.cache: ResponseCache = (
            RedisCache(self.redis)
            if self.redis is not None
            else MemoryCache(
                max_entries=settings.cache_max_entries, max_bytes=settings.cache_max_bytes
            )
        )
        # Every unit of work goes through the dispatcher; fan-out and workflows are built on
        # it and attached back to it, for targets that name a workflow or routes to a fan-out.
        session_store: SessionStore = (
            RedisSessionStore(self.redis)
            if self.redis is not None
            else MemorySessionStore(max_sessions=settings.session_max_sessions)
        )
        self.conversations = Conversations(
            session_store,
            ttl=settings.session_ttl,
            policy=lambda agent: session_policy(config, agent),
        )
        self.dispatcher = Dispatcher(self.router, self.upstream, self.cache, self.conversations)
        self.fanout = FanOut(self.registry, self.dispatcher, FanOutLimits(settings.max_fanout_legs))
        self.workflows = WorkflowService(
            workflows,
            self.registry,
            self.dispatcher,
            max_parts=settings.max_parts,
            max_bytes=settings.workflow_max_bytes,
        )
        self.job_store: JobStore = (
            RedisJobStore(self.redis)
            if self.redis
            else MemoryJobStore(max_bytes=settings.job_store_max_bytes)
        )
        self.dispatcher.attach(workflows=self.workflows, fanout=self.fanout)
        self.jobs = JobManager(
            self.job_store,
            dispatcher=self.dispatcher,
            fanout=self.fanout,
            workflows=lambda: self.workflows,
            settings=JobSettings(
                workers=settings.job_workers,
                timeout=settings.job_timeout,
                ttl=settings.job_ttl,
                max_active=settings.max_jobs,
                lease=settings.job_lease,
                max_job_bytes=settings.job_max_bytes,
                max_message_bytes=settings.max_message_bytes,
                input_timeout=settings.job_input_timeout,
            ),
            shared=self.redis is not None,
        )
        servicer = GatewayServicer(
            registry=self.registry,
            dispatcher=self.dispatcher,
            fanout=self.fanout,
            workflows=self.workflows,
            jobs=self.jobs,
            sessions=session_store,
            max_hops=self.settings.max_delegation_depth,
        )
        binding = ServiceBinding(
            GATEWAY_SERVICE,
            lambda server: gateway_pb2_grpc.add_GatewayServicer_to_server(servicer, server),
        )
        self.authenticator = Authenticator.from_settings(settings)
        # With Redis, every replica draws from the same buckets.
        self.rate_limiter = RateLimiter(
            self.authenticator.rate_policy(config.rate_limit), redis=self.redis
        )
        # One check for every method of every service served here (see guard).
        self.guard = Guard(
            self.authenticator,
            self.rate_limiter,
            base_policy=config.rate_limit,
            open_jobs=self.job_store.open_jobs,
            cost=self.cost,
            work_of=self._work_of,
            audit=AuditLog.open(settings.audit_log),
        )
        limits: list[grpc.aio.ServerInterceptor] = [GuardInterceptor(self.guard)]
        self.http: HttpServer | None = None
        self.dashboard: Dashboard | None = None
        self.mcp: McpService | None = None
        self.push = (
            PushNotifier(
                self.jobs,
                allow_private=settings.push_allow_private,
                retry=RetryPolicy(max_attempts=5, initial_backoff=0.2, max_backoff=5.0),
            )
            if settings.push_notifications
            else None
        )
        a2a_handler = MeshRequestHandler(
            registry=self.registry,
            jobs=self.jobs,
            workflows=self.workflows.catalog,
            # The card names the address the server bound (known once it started).
            url=lambda: f"{settings.host}:{self.server.port or settings.port}",
            http_url=self.http_url,
            secured=self.authenticator.configured,
            push=self.push,
        )
        if settings.http_port is not None:
            self.mcp = (
                McpService(
                    registry=self.registry,
                    workflows=self.workflows.catalog,
                    dispatcher=self.dispatcher,
                    guard=self.guard,
                    timeout=settings.default_timeout,
                    watch_interval=settings.card_refresh_interval,
                    allowed_hosts=self._http_hosts,
                )
                if settings.mcp
                else None
            )
            tls = (
                (settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)
                if settings.tls_cert_file is not None and settings.tls_key_file is not None
                else None
            )
            self.dashboard = (
                Dashboard(
                    registry=self.registry,
                    jobs=self.jobs,
                    workflows=self.workflows.catalog,
                    guard=self.guard,
                    traces_file=settings.dashboard_traces_file,
                    interval=settings.dashboard_interval,
                    window=settings.dashboard_window,
                )
                if settings.dashboard
                else None
            )
            self.http = HttpServer(
                http_app(
                    a2a_handler,
                    self.guard,
                    self.mcp,
                    max_body_bytes=settings.max_message_bytes,
                    dashboard=self.dashboard,
                ),
                host=settings.host,
                port=settings.http_port,
                tls=tls,
                lifespan=self.mcp.running if self.mcp is not None else None,
            )
        self.server = GrpcServer(
            settings,
            [binding, a2a_binding(a2a_handler)],
            interceptors=limits,
            on_stopped=self._close,
        )

    def cost(self, request: object) -> int:
        """Rate-limit tokens a request spends: what it will call, counted at admission.

        An invocation 1; a fan-out one per leg (its targets, or the agents offering its
        skill) plus its aggregator; a declared workflow its steps (nested, parallel and
        compensation steps counted), an inline one its top-level steps; a job its work.
        """
        if isinstance(request, gateway_pb2.SubmitJobRequest):
            work = request.WhichOneof("work")
            return 1 if work is None else self.cost(getattr(request, work))
        if isinstance(request, gateway_pb2.FanOutRequest):
            legs = len(request.targets) or len(self.registry.with_skill(request.skill))
            return max(1, legs) + (1 if request.HasField("aggregator") else 0)
        if isinstance(request, gateway_pb2.RunWorkflowRequest):
            if request.HasField("definition"):
                steps = request.definition.fields.get("steps")
                return max(1, len(steps.list_value.values) if steps is not None else 1)
            try:
                return max(1, self.workflows.catalog.get(request.workflow).size)
            except AgentError:
                return 1
        return 1

    def _work_of(self, request: object) -> object | None:
        """The job an A2A message asks for (its scopes and cost are the job's)."""
        if isinstance(request, a2a_types.SendMessageRequest):
            if request.message.task_id:
                return None  # an answer to its own task's question: no new work
            try:
                return work_for(request, [e.name for e in self.registry.entries])
            except Exception:  # refused with its own message by the handler
                return None
        return None

    def http_url(self) -> str | None:
        """The HTTP port's base URL (``http://host:port/``), None when it is off."""
        if self.http is None:
            return None
        port = self.http.port if self.http.port is not None else self.settings.http_port
        return f"{self.http.scheme}://{self.settings.host}:{port}/"

    def _http_hosts(self) -> list[str]:
        """Host headers /mcp accepts: the HTTP port's address (none checked on 0.0.0.0)."""
        host = self.settings.host
        if self.http is None or self.http.port is None or host in ("0.0.0.0", "::"):  # noqa: S104
            return []
        names = {host, "localhost"} if host in ("127.0.0.1", "::1", "localhost") else {host}
        return [f"{name}:{self.http.port}" for name in sorted(names)]

    def reload_keys(self) -> bool:
        """Read the keys file again (SIGHUP): revoked keys are refused from the next call."""
        return self.guard.reload()

    async def _close(self) -> None:
        """Release what the parts hold, once the server has stopped serving."""
        if self.guard.audit_log is not None:
            self.guard.audit_log.close()
        if self.dashboard is not None:
            self.dashboard.close()
        if self.http is not None:
            await self.http.stop()
        if self.push is not None:
            await self.push.close()
        await self.jobs.close()
        await self.registry.close()
        await self.cache.close()
        await self.conversations.store.close()
        if self.redis is not None:
            await self.redis.aclose()

    async def start(self) -> int:
        """Fetch agent cards, then listen; returns the bound port."""
        await self.registry.start()
        await self.jobs.start()
        if self.dashboard is not None:
            self.dashboard.start()
        if self.http is not None:
            await self.http.start()
        return await self.server.start()

    async def stop(self, grace: float | None = None) -> None:
        await self.server.stop(grace)

    async def serve(self) -> None:
        await self.registry.start()
        await self.jobs.start()
        loop = asyncio.get_running_loop()
        # SIGHUP: reload the keys file (a broken one keeps the keys in force).
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signal.SIGHUP, self.reload_keys)
        if self.http is not None:
            port = await self.http.start()
            log.info("HTTP port listening", extra={"url": self.http_url(), "port": port})
        await run_server(self.server)


def main(argv: Sequence[str] | None = None) -> None:
    settings = load_settings(GatewaySettings, argv, prog="agentmesh-gateway")
    configure_logging("gateway", level=settings.log_level, fmt=settings.log_format)
    start_telemetry("gateway", host=settings.host, metrics_port=settings.metrics_port)
    try:
        config = load_config(settings.config)
    except ConfigError as exc:
        raise SystemExit(f"agentmesh-gateway: {exc}") from None
    try:
        asyncio.run(_serve(settings, config))
    # e.g. a declared workflow that does not validate, an unreadable key or certificate file
    except (ConfigError, AuthConfigError, TLSConfigError) as exc:
        raise SystemExit(f"agentmesh-gateway: {exc}") from None


async def _serve(settings: GatewaySettings, config: GatewayConfig) -> None:
    # Built inside the running loop: grpc.aio channels bind to the loop that creates them.
    await Gateway(settings, config).serve()
