"""Assembling and running the gateway process."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc
import redis.asyncio as aioredis

from agentmesh.gateway.a2a import a2a_binding
from agentmesh.gateway.auth import (
    AuthConfigError,
    Authenticator,
    AuthInterceptor,
    JobQuota,
    authenticated_identity,
)
from agentmesh.gateway.cache import MemoryCache, RedisCache, ResponseCache
from agentmesh.gateway.config import ConfigError, GatewayConfig, GatewaySettings, load_config
from agentmesh.gateway.dispatch import Dispatcher
from agentmesh.gateway.fanout import FanOut, FanOutLimits
from agentmesh.gateway.jobs import JobManager, JobSettings
from agentmesh.gateway.jobstore import JobStore, MemoryJobStore, RedisJobStore
from agentmesh.gateway.registry import Registry
from agentmesh.gateway.resilience.interceptor import RateLimitInterceptor
from agentmesh.gateway.resilience.ratelimit import RateLimiter
from agentmesh.gateway.routing import Router
from agentmesh.gateway.servicer import GatewayServicer
from agentmesh.gateway.upstream import Upstream
from agentmesh.gateway.workflows import WorkflowService, load_catalog
from agentmesh.runtime.logs import configure_logging
from agentmesh.runtime.server import GrpcServer, ServiceBinding, run_server
from agentmesh.runtime.settings import load_settings
from agentmesh.runtime.tls import TLSConfigError
from agentmesh.telemetry import start_telemetry
from agentmesh.v1 import gateway_pb2_grpc

GATEWAY_SERVICE = "agentmesh.v1.Gateway"


class Gateway:
    """The gateway's parts, started and stopped together (build it inside a running loop)."""

    def __init__(self, settings: GatewaySettings, config: GatewayConfig) -> None:
        self.settings = settings
        # Declared workflows first: a bad one stops the gateway before it opens anything.
        workflows = load_catalog(config, settings)
        self.registry = Registry(config, settings)
        self.upstream = Upstream(settings, self.registry)
        # A bounded pool that waits for a free connection: many watchers share a few.
        self.redis: aioredis.Redis | None = (
            aioredis.Redis(
                connection_pool=aioredis.BlockingConnectionPool.from_url(
                    settings.redis_url, max_connections=settings.redis_max_connections, timeout=10
                )
            )
            if settings.redis_url
            else None
        )
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
        self.dispatcher = Dispatcher(self.router, self.upstream, self.cache)
        self.fanout = FanOut(self.registry, self.dispatcher, FanOutLimits(settings.max_fanout_legs))
        self.workflows = WorkflowService(
            workflows,
            self.registry,
            self.dispatcher,
            max_parts=settings.max_parts,
            max_bytes=settings.workflow_max_bytes,
        )
        store: JobStore = (
            RedisJobStore(self.redis)
            if self.redis
            else MemoryJobStore(max_bytes=settings.job_store_max_bytes)
        )
        self.dispatcher.attach(workflows=self.workflows, fanout=self.fanout)
        self.jobs = JobManager(
            store,
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
            ),
            shared=self.redis is not None,
        )
        servicer = GatewayServicer(self)
        binding = ServiceBinding(
            GATEWAY_SERVICE,
            lambda server: gateway_pb2_grpc.add_GatewayServicer_to_server(servicer, server),
        )
        self.authenticator = Authenticator.from_settings(settings)
        # Per-key max_jobs, counted for SubmitJob and A2A messages alike.
        self.job_quota = JobQuota(lambda: self.jobs)
        self.rate_limiter = RateLimiter(self.authenticator.rate_policy(config.rate_limit))
        # Authentication before the rate limit: callers are limited by their key.
        limits: list[grpc.aio.ServerInterceptor] = []
        if self.authenticator.configured:
            limits.append(AuthInterceptor(self.authenticator, quota=self.job_quota))
        if self.rate_limiter.enabled:
            limits.append(
                RateLimitInterceptor(self.rate_limiter, authenticated=authenticated_identity)
            )
        self.server = GrpcServer(
            settings, [binding, a2a_binding(self)], interceptors=limits, on_stopped=self._close
        )

    async def _close(self) -> None:
        """Release what the parts hold, once the server has stopped serving."""
        await self.jobs.close()
        await self.registry.close()
        await self.cache.close()
        if self.redis is not None:
            await self.redis.aclose()

    async def start(self) -> int:
        """Fetch agent cards, then listen; returns the bound port."""
        await self.registry.start()
        await self.jobs.start()
        return await self.server.start()

    async def stop(self, grace: float | None = None) -> None:
        await self.server.stop(grace)

    async def serve(self) -> None:
        await self.registry.start()
        await self.jobs.start()
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
