"""Response cache for idempotent calls, opted into per route or per agent.

A key covers everything that decides an answer: the agent, its card version
(so a redeployed agent never serves its predecessor's answers), the skill,
the message's parts and metadata, and the options. Message, context and task
ids are left out: they differ on every call. Values are serialized
``InvokeResponse`` messages.

:class:`MemoryCache` (the default) is a per-process LRU bounded by entry count
and bytes; :class:`RedisCache` is shared by every gateway replica. A cache
failure is logged and treated as a miss: caching must never fail a call.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from agentmesh.telemetry.metrics import CACHE_LOOKUPS
from agentmesh.v1 import messages_pb2 as pb

log = logging.getLogger("agentmesh.gateway.cache")

KEY_PREFIX = "agentmesh:cache:v1:"


def cache_key(agent: str, version: str, skill: str, request: pb.InvokeRequest) -> str:
    """The cache key of ``request`` when served by ``agent`` at card ``version``."""
    significant = pb.InvokeRequest(skill=skill)
    significant.message.parts.extend(request.message.parts)
    if request.message.HasField("metadata"):
        significant.message.metadata.CopyFrom(request.message.metadata)
    if request.HasField("options"):
        significant.options.CopyFrom(request.options)
    digest = hashlib.sha256(significant.SerializeToString(deterministic=True)).hexdigest()
    return f"{KEY_PREFIX}{agent}:{version or '-'}:{digest}"


class ResponseCache(Protocol):
    async def get(self, key: str) -> pb.InvokeResponse | None: ...

    async def put(self, key: str, response: pb.InvokeResponse, ttl: float) -> None: ...

    async def close(self) -> None: ...


class MemoryCache:
    """An LRU of serialized responses, bounded by entries and bytes, with per-entry TTL."""

    def __init__(
        self,
        *,
        max_entries: int = 1024,
        max_bytes: int = 64 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._bytes = 0
        self._clock = clock

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> pb.InvokeResponse | None:
        found = self._entries.get(key)
        if found is None:
            CACHE_LOOKUPS.labels(result="miss").inc()
            return None
        expires, value = found
        if expires <= self._clock():
            self._drop(key)
            CACHE_LOOKUPS.labels(result="miss").inc()
            return None
        self._entries.move_to_end(key)
        CACHE_LOOKUPS.labels(result="hit").inc()
        return pb.InvokeResponse.FromString(value)

    async def put(self, key: str, response: pb.InvokeResponse, ttl: float) -> None:
        value = response.SerializeToString()
        if len(value) > self._max_bytes:
            return  # larger than the whole cache: not worth evicting everything for
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (self._clock() + ttl, value)
        self._bytes += len(value)
        while len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
            self._drop(next(iter(self._entries)))  # least recently used first

    def _drop(self, key: str) -> None:
        _, value = self._entries.pop(key)
        self._bytes -= len(value)

    async def close(self) -> None:
        self._entries.clear()
        self._bytes = 0


class RedisCache:
    """Responses in Redis with Redis-side expiry, shared by every gateway replica."""

    def __init__(self, client: aioredis.Redis, *, max_value_bytes: int = 4 * 1024 * 1024) -> None:
        self._redis = client
        self._max_value_bytes = max_value_bytes

    async def get(self, key: str) -> pb.InvokeResponse | None:
        try:
            value = await self._redis.get(key)
        except RedisError as exc:
            log.warning("cache read failed", extra={"error": str(exc)})
            value = None
        CACHE_LOOKUPS.labels(result="miss" if value is None else "hit").inc()
        return None if value is None else pb.InvokeResponse.FromString(value)

    async def put(self, key: str, response: pb.InvokeResponse, ttl: float) -> None:
        value = response.SerializeToString()
        if len(value) > self._max_value_bytes:
            return
        try:
            await self._redis.set(key, value, px=max(1, int(ttl * 1000)))
        except RedisError as exc:
            log.warning("cache write failed", extra={"error": str(exc)})

    async def close(self) -> None:
        """The Redis client is shared and closed by its owner."""


__all__ = ["KEY_PREFIX", "MemoryCache", "RedisCache", "ResponseCache", "cache_key"]
