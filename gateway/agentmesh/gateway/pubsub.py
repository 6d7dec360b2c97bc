"""One Redis pub/sub subscription kept open for the life of a gateway process.

The job store (wake-ups of watchers and workers) and the shared breakers
(transitions made by other replicas) each hold one: a task that subscribes
to a fixed set of channels, hands every message to its channel's handler, and
reconnects after a lost connection. Messages published while it was
disconnected are lost (pub/sub keeps nothing), so ``on_connect`` runs after
every (re)subscription: the owner looks at the store again there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping

import redis.asyncio as aioredis

log = logging.getLogger("agentmesh.gateway.pubsub")

Handler = Callable[[str], None]


class Subscription:
    """``channels`` (name -> handler of the message's text) on ``client``, once started."""

    RECONNECT_PAUSE = 1.0

    def __init__(
        self,
        client: aioredis.Redis,
        channels: Mapping[str, Handler],
        *,
        name: str,
        on_connect: Callable[[], Awaitable[None] | None] | None = None,
    ) -> None:
        self._redis = client
        self._channels = dict(channels)
        self._name = name
        self._on_connect = on_connect
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name=self._name)

    async def connected(self) -> None:
        """Return once the subscription is in place (tests wait for it before publishing)."""
        await self._connected.wait()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _listen(self) -> None:
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(*self._channels)
                if self._on_connect is not None:
                    pending = self._on_connect()
                    if pending is not None:
                        await pending
                self._connected.set()
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=30)
                    if message is None or message.get("type") != "message":
                        continue
                    channel = message["channel"].decode()
                    self._channels[channel](message["data"].decode())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._connected.clear()
                log.warning(
                    "Redis pub/sub connection lost; reconnecting",
                    extra={"subscription": self._name, "error": type(exc).__name__},
                )
                await asyncio.sleep(self.RECONNECT_PAUSE)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]


__all__ = ["Handler", "Subscription"]
