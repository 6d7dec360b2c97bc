"""The gateway's table of agents: addresses, channels, cards and reachability.

Each agent has one or more replicas. A list of addresses gets one channel per
replica, picked round-robin by the gateway; a ``dns:///`` address (a
Kubernetes headless Service) gets one channel that gRPC balances round-robin
over every address the name resolves to.

Health-aware: the gateway watches each listed replica's ``grpc.health.v1``
status and skips a replica that says NOT_SERVING (it is draining), as well as
one ejected after repeated failures. A ``dns:///`` channel asks gRPC to do the
same per resolved address (client-side health checking, ``healthCheckConfig``).
Each entry also carries its :class:`AgentGuard` (breaker, bulkhead, budget).

An agent declared with ``a2a`` speaks A2A v1: its replicas call it through
:class:`~agentmesh.gateway.external.A2AAgentStub`, which offers the same calls
as the generated ``agentmesh.v1.Agent`` stub. A2A has no health service, so
its reachability comes from card fetches and calls alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agentmesh.gateway.config import AgentConfig, GatewayConfig, GatewaySettings
from agentmesh.gateway.external import A2AAgentStub
from agentmesh.gateway.policy import agent_policy
from agentmesh.gateway.resilience import AgentGuard
from agentmesh.gateway.resilience.outlier import ReplicaStats
from agentmesh.gateway.resilience.shared import BreakerSync
from agentmesh.runtime import wire
from agentmesh.runtime.tls import channel_credentials
from agentmesh.v1 import agent_pb2, agent_pb2_grpc
from agentmesh.v1 import messages_pb2 as pb

log = logging.getLogger("agentmesh.gateway.registry")

# Round-robin over every resolved address, each health-checked by gRPC
# itself: an address whose health says NOT_SERVING leaves the rotation.
_DNS_SERVICE_CONFIG = json.dumps(
    {"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": ""}}
)


class Reachability(enum.Enum):
    UNKNOWN = "unknown"
    SERVING = "serving"
    UNAVAILABLE = "unavailable"


class Health(enum.Enum):
    """A replica's last ``grpc.health.v1`` status as the gateway watched it."""

    UNKNOWN = "unknown"  # not watched yet, or the watch is broken (agent down?)
    SERVING = "serving"
    NOT_SERVING = "not_serving"  # draining: skipped while others can answer


def channel_options(settings: GatewaySettings) -> list[tuple[str, int | str]]:
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", int(settings.keepalive_time * 1000)),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout * 1000)),
        # Reconnect quickly after an agent restarts instead of backing off for
        # up to two minutes (gRPC's default ceiling).
        ("grpc.max_reconnect_backoff_ms", 2000),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
    ]


class StreamCall(Protocol):
    """A started ``InvokeStream``: events until ``grpc.aio.EOF``; ``cancel()`` at any time."""

    async def read(self) -> Any: ...

    def cancel(self) -> bool: ...


Metadata = Sequence[tuple[str, str]]


class AgentStub(Protocol):
    """The calls the gateway makes to an agent, as the generated gRPC stub offers them."""

    def Invoke(
        self,
        request: pb.InvokeRequest,
        *,
        timeout: float | None = ...,
        metadata: Metadata | None = ...,
    ) -> Awaitable[pb.InvokeResponse]: ...

    def InvokeStream(
        self,
        request: pb.InvokeRequest,
        *,
        timeout: float | None = ...,
        metadata: Metadata | None = ...,
    ) -> StreamCall: ...

    def GetCard(
        self, request: agent_pb2.GetCardRequest, *, timeout: float | None = ...
    ) -> Awaitable[pb.AgentCard]: ...


@dataclass(slots=True)
class Replica:
    address: str
    channel: grpc.aio.Channel | None  # None for an A2A agent over JSON-RPC
    stub: AgentStub
    health: Health = Health.UNKNOWN
    stats: ReplicaStats = field(default_factory=ReplicaStats)

    @property
    def balanced_by_grpc(self) -> bool:
        """A ``dns:///`` name: gRPC balances and health-checks its addresses."""
        return self.address.startswith("dns:")

    @property
    def health_watched(self) -> bool:
        """An agentmesh agent at one address: the gateway follows its grpc.health status."""
        return not self.balanced_by_grpc and not isinstance(self.stub, A2AAgentStub)

    async def close(self) -> None:
        if isinstance(self.stub, A2AAgentStub):
            await self.stub.close()  # closes the channel too
        elif self.channel is not None:
            await self.channel.close(grace=None)

    def eligible(self, now: float) -> bool:
        return self.health is not Health.NOT_SERVING and not self.stats.ejected(now)


@dataclass(slots=True)
class AgentEntry:
    """One registered agent and what the gateway last learnt of it."""

    name: str
    config: AgentConfig
    replicas: list[Replica]
    guard: AgentGuard
    card: pb.AgentCard | None = None
    reachability: Reachability = Reachability.UNKNOWN
    detail: str = ""
    skills: frozenset[str] = frozenset()
    next_refresh: float = 0.0  # loop time of the next card fetch
    failures: int = 0  # card fetches failed in a row
    _next: int = field(default=0, repr=False)
    _picks: int = field(default=0, repr=False)

    def pick(self, exclude: Collection[Replica] = ()) -> Replica:
        """The next replica round-robin, skipping draining, ejected and ``exclude``d ones.

        When every replica is skipped, the next one not in ``exclude`` (or
        simply the next one): better a doubtful replica than no call.
        """
        self._picks += 1
        replicas = self.replicas
        count = len(replicas)
        start = self._next
        if count == 1:
            return replicas[0]
        now = time.monotonic()
        for offset in range(count):
            replica = replicas[(start + offset) % count]
            if replica not in exclude and replica.eligible(now):
                self._next = start + offset + 1
                return replica
        for offset in range(count):
            replica = replicas[(start + offset) % count]
            if replica not in exclude:
                self._next = start + offset + 1
                return replica
        self._next = start + 1
        return replicas[start % count]

    @property
    def picks(self) -> int:
        """How many calls have been routed to this agent."""
        return self._picks

    def options_schema(self, skill: str) -> dict[str, Any] | None:
        """The options schema on the card of ``skill`` (empty: the first skill), if declared."""
        if self.card is None or not self.card.skills:
            return None
        offered = next((s for s in self.card.skills if s.id == skill), None) if skill else None
        found = offered if skill else self.card.skills[0]
        return None if found is None else wire.schema_from_proto(found, "options_schema")

    @property
    def draining(self) -> bool:
        """Every replica's health says NOT_SERVING."""
        return all(r.health is Health.NOT_SERVING for r in self.replicas)

    def may_eject(self) -> bool:
        """Whether one more replica may leave the rotation (never the last one)."""
        count = len(self.replicas)
        if count < 2 or self.replicas[0].balanced_by_grpc:
            return False
        now = time.monotonic()
        ejected = sum(1 for r in self.replicas if r.stats.ejected(now))
        allowed = count * self.guard.policy.ejection.max_ejected_percent // 100
        return ejected < min(allowed, count - 1)

    @property
    def addresses(self) -> list[str]:
        return [r.address for r in self.replicas]

    def mark_serving(self) -> None:
        self.reachability, self.detail = Reachability.SERVING, ""

    def mark_unavailable(self, detail: str) -> None:
        self.reachability, self.detail = Reachability.UNAVAILABLE, detail

    def set_card(self, card: pb.AgentCard) -> None:
        self.card = card
        self.skills = frozenset(self.config.skills) | {s.id for s in card.skills}
        self.mark_serving()


class Registry:
    def __init__(
        self,
        config: GatewayConfig,
        settings: GatewaySettings,
        *,
        clock: Callable[[], float] = time.time,
        breaker_sync: BreakerSync | None = None,
    ) -> None:
        """``clock`` (unix seconds) times the breakers: tests inject one to pass reset timeouts.

        ``breaker_sync`` shares the breakers with the other replicas (Redis).
        """
        self._settings = settings
        self._breaker_sync = breaker_sync
        options = channel_options(settings)
        credentials = channel_credentials(
            ca_file=settings.upstream_tls_ca_file,
            cert_file=settings.upstream_tls_cert_file,
            key_file=settings.upstream_tls_key_file,
            prefix="upstream_tls",
        )
        defaults = config.defaults
        budget = (
            defaults.retry_budget_ratio,
            defaults.retry_budget_min_per_second,
            defaults.retry_budget_window,
        )
        self._entries: dict[str, AgentEntry] = {}
        for name, agent in config.agents.items():
            replicas = [
                _replica(name, agent, address, options, credentials) for address in agent.addresses
            ]
            guard = AgentGuard.build(
                name,
                agent_policy(defaults, agent),
                retry_budget=budget,
                clock=clock,
            )
            self._entries[name] = AgentEntry(
                name, agent, replicas, guard, skills=frozenset(agent.skills)
            )
        self._refresher: asyncio.Task[None] | None = None
        self._watchers: list[asyncio.Task[None]] = []
        if breaker_sync is not None:
            breaker_sync.attach(entry.guard.breaker for entry in self._entries.values())

    async def start(self) -> None:
        """Fetch every card once, then keep them fresh and watch health in the background."""
        if self._breaker_sync is not None:
            await self._breaker_sync.start()
        for entry in self._entries.values():
            for replica in entry.replicas:
                if replica.health_watched:
                    self._watchers.append(
                        asyncio.create_task(
                            _watch_health(entry.name, replica, entry.guard.breaker.probe_soon),
                            name=f"health:{replica.address}",
                        )
                    )
        await self.refresh_all()
        self._refresher = asyncio.create_task(self._refresh_forever(), name="card-refresh")

    async def close(self) -> None:
        tasks = [*self._watchers, *([self._refresher] if self._refresher else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._watchers.clear()
        if self._breaker_sync is not None:
            await self._breaker_sync.close()
        for entry in self._entries.values():
            for replica in entry.replicas:
                await replica.close()

    def get(self, name: str) -> AgentEntry | None:
        return self._entries.get(name)

    @property
    def entries(self) -> Sequence[AgentEntry]:
        return list(self._entries.values())

    def with_skill(self, skill: str) -> list[AgentEntry]:
        return [e for e in self._entries.values() if skill in e.skills]

    async def refresh(self, entry: AgentEntry) -> None:
        """Fetch ``entry``'s card; record whether the agent answered.

        An agent that answered is asked again after ``card_refresh_interval``;
        one that did not is retried sooner, backing off from half a second.
        """
        loop = asyncio.get_running_loop()
        interval = self._settings.card_refresh_interval
        replica = entry.pick()
        try:
            card = await replica.stub.GetCard(
                agent_pb2.GetCardRequest(), timeout=self._settings.card_timeout
            )
        except grpc.aio.AioRpcError as exc:
            if entry.reachability is not Reachability.UNAVAILABLE:
                log.warning(
                    "agent unreachable",
                    extra={
                        "agent": entry.name,
                        "address": replica.address,
                        "code": exc.code().name,
                    },
                )
            entry.mark_unavailable(f"{replica.address}: {exc.code().name}: {exc.details()}")
            entry.failures += 1
            entry.next_refresh = loop.time() + min(interval, 0.5 * 2 ** (entry.failures - 1))
            return
        entry.failures = 0
        entry.next_refresh = loop.time() + interval
        # An external A2A agent has its own name for itself: only a native one is warned of.
        if card.name and card.name != entry.name and entry.config.a2a is None:
            log.warning(
                "agent card name differs from its registry name",
                extra={"agent": entry.name, "card_name": card.name},
            )
        entry.set_card(card)

    async def refresh_all(self) -> None:
        await asyncio.gather(*(self.refresh(e) for e in self._entries.values()))

    def refresh_soon(self, entry: AgentEntry) -> None:
        """Fetch ``entry``'s card at the next tick (e.g. it answered a call but has none)."""
        entry.next_refresh = 0.0

    async def _refresh_forever(self) -> None:
        loop = asyncio.get_running_loop()
        tick = min(0.5, self._settings.card_refresh_interval)
        while True:
            await asyncio.sleep(tick)
            due = [e for e in self._entries.values() if e.next_refresh <= loop.time()]
            try:
                await asyncio.gather(*(self.refresh(e) for e in due))
            except Exception:  # a refresh bug must not end refreshing for good
                log.exception("card refresh failed")


async def _watch_health(agent: str, replica: Replica, recovered: Callable[[], None]) -> None:
    """Follow ``replica``'s health with a Watch stream, re-opened with backoff when it breaks.

    A replica that says SERVING again after saying otherwise leaves ejection, and
    ``recovered`` (the agent breaker's ``probe_soon``) lets an open breaker probe now.
    """
    assert replica.channel is not None
    stub = health_pb2_grpc.HealthStub(replica.channel)
    pause = 0.1
    while True:
        try:
            async for reply in stub.Watch(health_pb2.HealthCheckRequest(service="")):
                health = (
                    Health.SERVING
                    if reply.status == health_pb2.HealthCheckResponse.SERVING
                    else Health.NOT_SERVING
                )
                if health is Health.SERVING and replica.health is not Health.SERVING:
                    replica.stats.ejected_until = 0.0
                    recovered()
                if health is not replica.health:
                    log.info(
                        "replica health %s",
                        health.value,
                        extra={"agent": agent, "address": replica.address},
                    )
                replica.health = health
                pause = 0.1
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                replica.health = Health.UNKNOWN  # an agent without health: never skipped
                return
        # The stream ended. After NOT_SERVING it is a draining agent closing its
        # watchers: it stays skipped until a new stream says otherwise. Otherwise
        # the agent stopped or restarts; unknown is not a reason to skip it
        # (failed calls and ejection handle a dead replica).
        if replica.health is not Health.NOT_SERVING:
            replica.health = Health.UNKNOWN
        await asyncio.sleep(pause)
        pause = min(pause * 2, 2.0)


def _replica(
    name: str,
    agent: AgentConfig,
    address: str,
    options: list[tuple[str, int | str]],
    credentials: grpc.ChannelCredentials | None = None,
) -> Replica:
    """A channel to ``address`` (TLS, mTLS with a client certificate, when ``credentials``).

    For an A2A agent over JSON-RPC the address is a URL and there is no channel.
    """
    a2a = agent.a2a
    if a2a is not None and a2a.binding == "jsonrpc":
        return Replica(address, None, A2AAgentStub.over_jsonrpc(name, address, a2a, agent.skills))
    if address.startswith("dns:"):
        options = [*options, ("grpc.service_config", _DNS_SERVICE_CONFIG)]
    channel = (
        grpc.aio.insecure_channel(address, options=options)
        if credentials is None
        else grpc.aio.secure_channel(address, credentials, options=options)
    )
    if a2a is not None:
        return Replica(address, channel, A2AAgentStub.over_grpc(name, channel, a2a, agent.skills))
    return Replica(address, channel, agent_pb2_grpc.AgentStub(channel))
