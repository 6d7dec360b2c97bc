"""Where the memory agent keeps its spaces: in this process, or in Redis.

Every operation names the space's *owner* (the caller's principal) and the
space: the key is ``(owner, space)``, so a principal naming another's space
finds an empty one, whether the other's exists or not.

Bounds hold per space: at most ``max_entries`` entries and ``max_bytes``
bytes of stored entries; past either, the oldest entries go first (remember
reports how many). A space expires ``ttl`` seconds after its last write. The
in-process store also keeps at most ``max_spaces`` spaces, dropping the least
recently written first.

:class:`RedisSpaceStore` lets several replicas of the agent (and any number
of gateways in front of them) share spaces. Its layout (``P`` =
``agentmesh:memory:v1``, ``h(x)`` a SHA-256 hex digest)::

    P:e:{h(owner, space)}   list of entries, oldest first ("ID<TAB>JSON")
    P:b:{h(owner, space)}   the bytes those entries take

Both keys expire ``ttl`` after the last write; adding (with eviction) and
removing run as Lua scripts, so concurrent writers keep the bounds.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import redis.asyncio as aioredis
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis.exceptions import RedisError

from agentmesh.agents.memory.logic import Entry
from agentmesh.runtime.errors import LimitExceeded, Unavailable
from agentmesh.runtime.redisconn import open_redis

MiB = 1024 * 1024
T = TypeVar("T")


class MemorySettings(BaseSettings):
    """The memory agent's store, from ``AGENTMESH_*`` variables (Redis ones as the gateway's)."""

    model_config = SettingsConfigDict(env_prefix="AGENTMESH_", extra="ignore")

    redis_url: str | None = Field(
        None,
        description="Redis for the memory spaces (e.g. redis://redis:6379/0), shared by every "
        "replica; unset: in this process only",
    )
    redis_max_connections: int = Field(16, ge=1, le=10_000)
    redis_password: SecretStr | None = None
    redis_password_file: Path | None = None
    redis_tls_ca_file: Path | None = None
    memory_ttl: float = Field(
        30 * 24 * 3600.0, gt=0, description="seconds a space is kept after its last write"
    )
    memory_max_entries: int = Field(1_000, ge=1, le=1_000_000, description="entries per space")
    memory_max_bytes: int = Field(
        1 * MiB, ge=1024, le=256 * MiB, description="bytes of entries per space"
    )
    memory_max_spaces: int = Field(
        10_000, ge=1, description="spaces the in-process store keeps (without Redis)"
    )


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds of every space (see the module docstring)."""

    ttl: float = 30 * 24 * 3600.0
    max_entries: int = 1_000
    max_bytes: int = 1 * MiB


class SpaceStore(Protocol):
    """Spaces by (owner, space name); every call names the owner."""

    limits: Limits

    async def add(self, owner: str, space: str, entry: Entry) -> tuple[int, int]:
        """Append ``entry``; returns (entries in the space now, entries evicted)."""
        ...

    async def entries(self, owner: str, space: str) -> list[Entry]:
        """The space's entries, oldest first ([] when it does not exist)."""
        ...

    async def remove(self, owner: str, space: str, entry_id: str) -> bool:
        """Remove one entry; False when the space holds none with that id."""
        ...

    async def drop(self, owner: str, space: str) -> int:
        """Remove the whole space; the number of entries it held (0: none)."""
        ...

    async def close(self) -> None: ...


def _size(entry: Entry) -> int:
    return len(entry.dump().encode())


def _check_size(entry: Entry, limits: Limits) -> int:
    size = _size(entry)
    if size > limits.max_bytes:
        raise LimitExceeded(
            "memory_max_bytes",
            f"the entry takes {size} bytes; a space holds at most {limits.max_bytes}",
        )
    return size


@dataclass(slots=True)
class _Space:
    entries: OrderedDict[str, Entry] = field(default_factory=OrderedDict)
    bytes: int = 0
    expires: float = 0.0


class MemorySpaceStore:
    """Spaces in this process (each replica has its own)."""

    def __init__(
        self,
        limits: Limits | None = None,
        *,
        max_spaces: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.limits = limits or Limits()
        self._spaces: OrderedDict[tuple[str, str], _Space] = OrderedDict()
        self._max_spaces = max_spaces
        self._clock = clock

    def _live(self, key: tuple[str, str]) -> _Space | None:
        space = self._spaces.get(key)
        if space is not None and space.expires <= self._clock():
            del self._spaces[key]
            return None
        return space

    async def add(self, owner: str, space: str, entry: Entry) -> tuple[int, int]:
        size = _check_size(entry, self.limits)
        key = (owner, space)
        held = self._live(key) or _Space()
        held.entries[entry.id] = entry
        held.bytes += size
        evicted = 0
        while len(held.entries) > self.limits.max_entries or held.bytes > self.limits.max_bytes:
            _, oldest = held.entries.popitem(last=False)
            held.bytes -= _size(oldest)
            evicted += 1
        held.expires = self._clock() + self.limits.ttl
        self._spaces[key] = held
        self._spaces.move_to_end(key)
        while len(self._spaces) > self._max_spaces:
            self._spaces.popitem(last=False)
        return len(held.entries), evicted

    async def entries(self, owner: str, space: str) -> list[Entry]:
        held = self._live((owner, space))
        return [] if held is None else list(held.entries.values())

    async def remove(self, owner: str, space: str, entry_id: str) -> bool:
        key = (owner, space)
        held = self._live(key)
        if held is None or entry_id not in held.entries:
            return False
        held.bytes -= _size(held.entries.pop(entry_id))
        if not held.entries:
            del self._spaces[key]
        return True

    async def drop(self, owner: str, space: str) -> int:
        held = self._live((owner, space))
        if held is None:
            return 0
        del self._spaces[(owner, space)]
        return len(held.entries)

    async def close(self) -> None:
        self._spaces.clear()


_ADD = """
local size = string.len(ARGV[1])
redis.call('RPUSH', KEYS[1], ARGV[1])
local bytes = redis.call('INCRBY', KEYS[2], size)
local count = redis.call('LLEN', KEYS[1])
local evicted = 0
while count > tonumber(ARGV[2]) or bytes > tonumber(ARGV[3]) do
  local oldest = redis.call('LPOP', KEYS[1])
  bytes = redis.call('DECRBY', KEYS[2], string.len(oldest))
  count = count - 1
  evicted = evicted + 1
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return {count, evicted}
"""

_REMOVE = """
local prefix = ARGV[1] .. '\\t'
for _, item in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if string.sub(item, 1, string.len(prefix)) == prefix then
    redis.call('LREM', KEYS[1], 1, item)
    redis.call('DECRBY', KEYS[2], string.len(item))
    if redis.call('LLEN', KEYS[1]) == 0 then
      redis.call('DEL', KEYS[1], KEYS[2])
    end
    return 1
  end
end
return 0
"""


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


class RedisSpaceStore:
    """Spaces in Redis, shared by every replica (layout in the module docstring)."""

    PREFIX = "agentmesh:memory:v1"

    def __init__(
        self,
        client: aioredis.Redis,
        limits: Limits | None = None,
        *,
        prefix: str = PREFIX,
        owns_client: bool = False,
    ) -> None:
        self.limits = limits or Limits()
        self._redis = client
        self._prefix = prefix
        self._owns = owns_client
        self._add = client.register_script(_ADD)
        self._remove = client.register_script(_REMOVE)

    def _keys(self, owner: str, space: str) -> list[str]:
        digest = _digest(owner, space)
        return [f"{self._prefix}:e:{digest}", f"{self._prefix}:b:{digest}"]

    async def _call(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except RedisError:
            # The store's address and error stay in the agent's logs, not in the reply.
            raise Unavailable("the memory store (Redis) is unavailable; retry later") from None

    async def add(self, owner: str, space: str, entry: Entry) -> tuple[int, int]:
        _check_size(entry, self.limits)
        limits = self.limits
        ttl_ms = max(1, int(limits.ttl * 1000))
        result: Any = await self._call(
            self._add(
                keys=self._keys(owner, space),
                args=[entry.dump(), limits.max_entries, limits.max_bytes, ttl_ms],
            )
        )
        count, evicted = result
        return int(count), int(evicted)

    async def entries(self, owner: str, space: str) -> list[Entry]:
        listed = self._redis.lrange(self._keys(owner, space)[0], 0, -1)
        raw = await self._call(cast("Awaitable[list[bytes]]", listed))
        return [Entry.load(item.decode()) for item in raw]

    async def remove(self, owner: str, space: str, entry_id: str) -> bool:
        removed: Any = await self._call(
            self._remove(keys=self._keys(owner, space), args=[entry_id])
        )
        return bool(removed)

    async def drop(self, owner: str, space: str) -> int:
        entries, bytes_key = self._keys(owner, space)

        async def drop() -> int:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.llen(entries)
                pipe.delete(entries, bytes_key)
                count, _ = await pipe.execute()
            return int(count)

        return await self._call(drop())

    async def close(self) -> None:
        if self._owns:
            await self._redis.aclose()


def open_store(settings: MemorySettings) -> SpaceStore:
    """The store ``settings`` ask for: Redis with ``redis_url``, else in this process."""
    limits = Limits(settings.memory_ttl, settings.memory_max_entries, settings.memory_max_bytes)
    if not settings.redis_url:
        return MemorySpaceStore(limits, max_spaces=settings.memory_max_spaces)
    password = settings.redis_password
    client = open_redis(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        password=password.get_secret_value() if password is not None else None,
        password_file=settings.redis_password_file,
        tls_ca_file=settings.redis_tls_ca_file,
    )
    return RedisSpaceStore(client, limits, owns_client=True)


__all__ = [
    "Limits",
    "MemorySettings",
    "MemorySpaceStore",
    "RedisSpaceStore",
    "SpaceStore",
    "open_store",
]
