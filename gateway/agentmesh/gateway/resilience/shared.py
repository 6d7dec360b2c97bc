"""Breaker state shared by every gateway replica through Redis, off the hot path.

Each replica decides admission from its own breakers (a closed breaker is one
local flag). What the others must know travels through Redis in the
background, written by one task in the order it happened:

* a failure counted while closed increments the agent's shared count; the
  increment that reaches ``failure_threshold`` opens the breaker for everyone
  (one Lua script: count, open, publish), so N replicas that each saw a few
  failures open together;
* a success after failures resets the shared count (a replica that has seen
  no failure since its last success writes nothing: a healthy agent costs no
  Redis command per call);
* a replica's own opening (its probe failed, or its own count reached the
  threshold) and closing (its probe succeeded) are written and published.

Every replica subscribes to the transitions channel and applies the others'
openings (with their probe time) and closings at once; on (re)connecting it
reads every agent's stored state, so a replica that starts while an agent's
breaker is open elsewhere starts open. Half-open is local: each replica sends
its own probe. Redis being unreachable costs the sharing, never a call: the
writes are dropped with a warning and each replica protects itself.

Redis layout (``P`` = ``agentmesh:breaker:v2``)::

    P:{agent}      hash: state (closed|open), failures, opened_at, probe_at (unix s)
    P:transitions  channel: {"origin", "agent", "state", "opened_at", "probe_at"}
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis

from agentmesh.gateway.pubsub import Subscription
from agentmesh.gateway.resilience.breaker import CLOSED, OPEN, AgentBreaker

log = logging.getLogger("agentmesh.gateway.breaker")

PREFIX = "agentmesh:breaker:v2"
KEEP_SECONDS = 86_400  # an agent's record outlives its last change by a day

# KEYS[1] the agent's hash; ARGV: threshold, opened_at, probe_at, channel, message, keep.
_FAILURE = """
local n = redis.call('HINCRBY', KEYS[1], 'failures', 1)
redis.call('EXPIRE', KEYS[1], ARGV[6])
if n >= tonumber(ARGV[1]) and redis.call('HGET', KEYS[1], 'state') ~= 'open' then
  redis.call('HSET', KEYS[1], 'state', 'open', 'failures', 0,
             'opened_at', ARGV[2], 'probe_at', ARGV[3])
  redis.call('PUBLISH', ARGV[4], ARGV[5])
  return 1
end
return 0
"""

_Op = tuple[str, str, float, float, int]  # kind, agent, opened_at, probe_at, threshold


class BreakerSync:
    """Shares the attached breakers' transitions and failure counts through ``client``."""

    def __init__(self, client: aioredis.Redis, *, prefix: str = PREFIX) -> None:
        self._redis = client
        self._p = prefix
        self._channel = f"{prefix}:transitions"
        self.origin = uuid.uuid4().hex  # this replica: its own messages are not applied twice
        self._breakers: dict[str, AgentBreaker] = {}
        self._ops: asyncio.Queue[_Op] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._failure = client.register_script(_FAILURE)
        self._reachable = True
        self._changed = asyncio.Event()
        self._subscription = Subscription(
            client, {self._channel: self._on_message}, name="breaker-sync", on_connect=self._load
        )

    def attach(self, breakers: Iterable[AgentBreaker]) -> None:
        for breaker in breakers:
            breaker.sync = self
            self._breakers[breaker.agent] = breaker

    async def start(self) -> None:
        """Read the stored states, then follow the others' transitions and write ours."""
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_forever(), name="breaker-sync-writer")
            self._subscription.start()

    async def ready(self) -> None:
        """Return once the stored states were read and the subscription is in place."""
        await self._subscription.connected()

    def changed(self) -> asyncio.Event:
        """An event set at the next transition taken from another replica."""
        return self._changed

    def _took(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def settled(self) -> None:
        """Return once everything reported so far was written (or dropped)."""
        await self._ops.join()

    async def close(self) -> None:
        await self._subscription.close()
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None

    # -- told by the breakers (never blocks) -------------------------------------

    def failure(self, agent: str, threshold: int, probe_at: float) -> None:
        self._ops.put_nowait(("failure", agent, time.time(), probe_at, threshold))

    def reset(self, agent: str) -> None:
        self._ops.put_nowait(("reset", agent, 0.0, 0.0, 0))

    def opened(self, agent: str, opened_at: float, probe_at: float) -> None:
        self._ops.put_nowait(("open", agent, opened_at, probe_at, 0))

    def closed(self, agent: str) -> None:
        self._ops.put_nowait(("close", agent, 0.0, 0.0, 0))

    # -- the writer -----------------------------------------------------------------

    async def _write_forever(self) -> None:
        while True:
            op = await self._ops.get()
            try:
                await self._write(*op)
                if not self._reachable:
                    self._reachable = True
                    log.info("shared breaker state reachable again")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._reachable:
                    self._reachable = False
                    log.warning(
                        "shared breaker state unreachable; each replica keeps its own",
                        extra={"agent": op[1], "error": type(exc).__name__},
                    )
            finally:
                self._ops.task_done()

    async def _write(
        self, kind: str, agent: str, opened_at: float, probe_at: float, threshold: int
    ) -> None:
        key = f"{self._p}:{agent}"
        if kind == "failure":
            message = self._message(agent, OPEN, opened_at, probe_at)
            opened = await self._failure(
                keys=[key],
                args=[threshold, opened_at, probe_at, self._channel, message, KEEP_SECONDS],
            )
            breaker = self._breakers.get(agent)
            if opened and breaker is not None:  # the count this replica added opened it
                breaker.apply_shared(OPEN, opened_at, probe_at)
                self._took()
            return
        async with self._redis.pipeline(transaction=True) as pipe:
            if kind == "reset":
                pipe.hset(key, "failures", "0")
            else:
                state = OPEN if kind == "open" else CLOSED
                fields: dict[str, Any] = {
                    "state": state, "failures": 0, "opened_at": opened_at, "probe_at": probe_at
                }  # fmt: skip
                pipe.hset(key, mapping=fields)
                pipe.publish(self._channel, self._message(agent, state, opened_at, probe_at))
            pipe.expire(key, KEEP_SECONDS)
            await pipe.execute()

    def _message(self, agent: str, state: str, opened_at: float, probe_at: float) -> str:
        return json.dumps(
            {
                "origin": self.origin,
                "agent": agent,
                "state": state,
                "opened_at": opened_at,
                "probe_at": probe_at,
            }
        )

    # -- the others' transitions -------------------------------------------------------

    def _on_message(self, text: str) -> None:
        try:
            message = json.loads(text)
            if message["origin"] == self.origin:
                return
            breaker = self._breakers.get(message["agent"])
            if breaker is not None and message["state"] in (OPEN, CLOSED):
                breaker.apply_shared(
                    message["state"], float(message["opened_at"]), float(message["probe_at"])
                )
                self._took()
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignored a malformed breaker message", extra={"error": str(exc)})

    async def _load(self) -> None:
        agents = list(self._breakers)
        async with self._redis.pipeline(transaction=False) as pipe:
            for agent in agents:
                pipe.hgetall(f"{self._p}:{agent}")
            stored = await pipe.execute()
        for agent, fields in zip(agents, stored, strict=True):
            if fields.get(b"state") == OPEN.encode():
                self._breakers[agent].apply_shared(
                    OPEN, float(fields.get(b"opened_at", 0)), float(fields.get(b"probe_at", 0))
                )


__all__ = ["PREFIX", "BreakerSync"]
