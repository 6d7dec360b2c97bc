"""The gateway's table of agents: addresses, channels, cards and reachability.

Each agent has one or more replicas. A list of addresses gets one channel per
replica, picked round-robin by the gateway; a ``dns:///`` address (a
Kubernetes headless Service) gets one channel that gRPC balances round-robin
over every address the name resolves to.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc

from agentmesh.gateway.config import AgentConfig, GatewayConfig, GatewaySettings
from agentmesh.v1 import agent_pb2, agent_pb2_grpc
from agentmesh.v1 import messages_pb2 as pb

log = logging.getLogger("agentmesh.gateway.registry")

_ROUND_ROBIN = '{"loadBalancingConfig": [{"round_robin": {}}]}'


class Reachability(enum.Enum):
    UNKNOWN = "unknown"
    SERVING = "serving"
    UNAVAILABLE = "unavailable"


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


@dataclass(slots=True)
class Replica:
    address: str
    channel: grpc.aio.Channel
    stub: agent_pb2_grpc.AgentAsyncStub


@dataclass(slots=True)
class AgentEntry:
    """One registered agent and what the gateway last learnt of it."""

    name: str
    config: AgentConfig
    replicas: list[Replica]
    card: pb.AgentCard | None = None
    reachability: Reachability = Reachability.UNKNOWN
    detail: str = ""
    skills: frozenset[str] = frozenset()
    next_refresh: float = 0.0  # loop time of the next card fetch
    failures: int = 0  # card fetches failed in a row
    _next: int = field(default=0, repr=False)

    def pick(self) -> Replica:
        """The next replica, round-robin."""
        replica = self.replicas[self._next % len(self.replicas)]
        self._next += 1
        return replica

    @property
    def picks(self) -> int:
        """How many calls have been routed to this agent."""
        return self._next

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
    def __init__(self, config: GatewayConfig, settings: GatewaySettings) -> None:
        self._settings = settings
        options = channel_options(settings)
        self._entries: dict[str, AgentEntry] = {}
        for name, agent in config.agents.items():
            replicas = [_replica(address, options) for address in agent.addresses]
            self._entries[name] = AgentEntry(name, agent, replicas, skills=frozenset(agent.skills))
        self._refresher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Fetch every card once, then keep them fresh in the background."""
        await self.refresh_all()
        self._refresher = asyncio.create_task(self._refresh_forever(), name="card-refresh")

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        for entry in self._entries.values():
            for replica in entry.replicas:
                await replica.channel.close(grace=None)

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
        if card.name and card.name != entry.name:
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


def _replica(address: str, options: list[tuple[str, int | str]]) -> Replica:
    if address.startswith("dns:"):
        options = [*options, ("grpc.service_config", _ROUND_ROBIN)]
    channel = grpc.aio.insecure_channel(address, options=options)
    return Replica(address, channel, agent_pb2_grpc.AgentStub(channel))
