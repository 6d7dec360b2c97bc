"""Conversations: where a session's turns live, and how they are kept short.

A message's ``context_id`` names a *session*, owned by the principal that
sent it: the key of a session is (owner, context_id), so another principal
naming the same context id has a different session and can never read,
continue or delete this one. For an agent whose card declares
``takes_history``, the dispatcher (``dispatch``) asks :class:`Conversations`
for the session's turns before the call (:meth:`Conversations.begin`, which
adds them to the request as a data part ``{"history": [...]}``) and records
the user's turn and the answer after it (:meth:`Conversations.finish`).
Agents stay stateless.

Compaction, not refusal: when a session holds more than ``max_turns``
exchanges (a user turn and its answer) or more than ``max_chars`` characters,
its older exchanges (and any earlier summary) are summarized by the
configured agent skill (the offline summarizer by default) into one summary
turn; the last ``keep_last`` exchanges stay verbatim.

:class:`MemorySessionStore` keeps sessions in this process (the default);
:class:`RedisSessionStore` keeps them in Redis, so that every gateway replica
continues the same session. Both expire a session ``ttl`` seconds after its
last turn. Every write is a compare-and-set on the session's ``version``: two
turns of one session sent at once both run and both land (the later writer
reads the session again and appends its exchange to what stands, dropping a
compaction it had made on the older copy).

Redis layout (``P`` = ``agentmesh:sessions:v2``, ``h(x)`` a SHA-256 hex digest)::

    P:s:{h(owner, context_id)}   hash: v (version), s (Session bytes); expires ttl after
                                 the last turn
    P:o:{h(owner)}               sorted set: that owner's context ids -> last use (unix s)
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import redis.asyncio as aioredis
from google.protobuf import struct_pb2

from agentmesh.runtime.errors import InvalidInput, Unavailable
from agentmesh.v1 import gateway_pb2
from agentmesh.v1 import messages_pb2 as pb

MAX_CONTEXT_ID_CHARS = 256
"""Longest accepted ``context_id``."""

SUMMARY_PREFIX = "Summary of the earlier conversation: "
"""How the summary turn starts in the history an agent receives."""

MAX_WRITE_ATTEMPTS = 16
"""How often a turn's write is tried when other turns of its session keep landing first."""


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """How one agent's sessions are kept (see the module docstring)."""

    max_turns: int = 40
    keep_last: int = 4
    max_chars: int = 100_000
    summarizer: str = "summarizer/summarize"


class SessionStore(Protocol):
    """Sessions by (owner, context id); every read names its owner."""

    async def get(self, owner: str, context_id: str) -> gateway_pb2.Session | None: ...

    async def put(
        self, owner: str, session: gateway_pb2.Session, *, ttl: float, expected: int
    ) -> bool:
        """Write ``session`` if the stored one's version is ``expected`` (0: none stored);
        False (nothing written) otherwise. ``session.version`` is the new version."""
        ...

    async def list(self, owner: str, limit: int) -> list[gateway_pb2.Session]: ...

    async def delete(self, owner: str, context_id: str) -> bool: ...

    async def close(self) -> None: ...


def summary(session: gateway_pb2.Session) -> gateway_pb2.Session:
    """``session`` without its turns and summary text (what a listing shows)."""
    brief = gateway_pb2.Session()
    brief.CopyFrom(session)
    del brief.turns[:]
    brief.summary = ""
    return brief


class MemorySessionStore:
    """Sessions in this process: the least recently used go first past ``max_sessions``."""

    def __init__(self, *, max_sessions: int = 10_000, clock: Callable[[], float] = time.time):
        self._sessions: OrderedDict[tuple[str, str], tuple[float, bytes]] = OrderedDict()
        self._max = max_sessions
        self._clock = clock

    async def get(self, owner: str, context_id: str) -> gateway_pb2.Session | None:
        entry = self._sessions.get((owner, context_id))
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._sessions[(owner, context_id)]
            return None
        return gateway_pb2.Session.FromString(entry[1])

    async def put(
        self, owner: str, session: gateway_pb2.Session, *, ttl: float, expected: int
    ) -> bool:
        key = (owner, session.context_id)
        stored = await self.get(owner, session.context_id)
        if (stored.version if stored is not None else 0) != expected:
            return False
        self._sessions[key] = (self._clock() + ttl, session.SerializeToString())
        self._sessions.move_to_end(key)
        while len(self._sessions) > self._max:
            self._sessions.popitem(last=False)
        return True

    async def list(self, owner: str, limit: int) -> list[gateway_pb2.Session]:
        now = self._clock()
        found = [
            gateway_pb2.Session.FromString(raw)
            for (who, _), (expiry, raw) in reversed(self._sessions.items())
            if who == owner and expiry > now
        ]
        return [summary(s) for s in found[:limit]]

    async def delete(self, owner: str, context_id: str) -> bool:
        return self._sessions.pop((owner, context_id), None) is not None

    async def close(self) -> None:
        self._sessions.clear()


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


_PUT = """
-- KEYS: session, owner's index; ARGV: expected version, new version, session bytes, ttl ms,
--       context id, now (unix s), ttl (s)
local version = redis.call('HGET', KEYS[1], 'v') or '0'
if version ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 's', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[6]) - tonumber(ARGV[7]))
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
"""


class RedisSessionStore:
    """Sessions in Redis, shared by every gateway replica (layout in the module docstring)."""

    PREFIX = "agentmesh:sessions:v2"

    def __init__(self, client: aioredis.Redis, *, prefix: str = PREFIX) -> None:
        self._redis = client
        self._prefix = prefix
        self._put = client.register_script(_PUT)

    def _session_key(self, owner: str, context_id: str) -> str:
        return f"{self._prefix}:s:{_digest(owner, context_id)}"

    def _owner_key(self, owner: str) -> str:
        return f"{self._prefix}:o:{_digest(owner)}"

    async def get(self, owner: str, context_id: str) -> gateway_pb2.Session | None:
        raw = await self._redis.hget(self._session_key(owner, context_id), "s")  # type: ignore[misc]
        return None if raw is None else gateway_pb2.Session.FromString(raw)

    async def put(
        self, owner: str, session: gateway_pb2.Session, *, ttl: float, expected: int
    ) -> bool:
        written = await self._put(
            keys=[self._session_key(owner, session.context_id), self._owner_key(owner)],
            args=[
                expected,
                session.version,
                session.SerializeToString(),
                max(1, int(ttl * 1000)),
                session.context_id,
                time.time(),
                ttl,  # sessions unused for longer have expired: out of the index
            ],
        )
        return bool(written)

    async def list(self, owner: str, limit: int) -> list[gateway_pb2.Session]:
        ids = await self._redis.zrevrange(self._owner_key(owner), 0, max(0, limit - 1))
        if not ids:
            return []
        names = [i.decode() if isinstance(i, bytes) else str(i) for i in ids]
        async with self._redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hget(self._session_key(owner, name), "s")
            raws = await pipe.execute()
        return [summary(gateway_pb2.Session.FromString(r)) for r in raws if r is not None]

    async def delete(self, owner: str, context_id: str) -> bool:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._session_key(owner, context_id))
            pipe.zrem(self._owner_key(owner), context_id)
            deleted, _ = await pipe.execute()
        return bool(deleted)

    async def close(self) -> None:
        """The Redis client belongs to the gateway, which closes it."""


# -- the hook around an agent call ---------------------------------------------------------

Summarize = Callable[[str, str], Awaitable[str]]
"""``summarize(target, text)``: the text of ``target``'s (an ``AGENT/SKILL``) summary."""


@dataclass(frozen=True, slots=True)
class Turn:
    """A turn under way: the request with its history, and what to record after it."""

    owner: str
    agent: str
    session: gateway_pb2.Session
    request: pb.InvokeRequest
    user: str


def _text(parts: object) -> str:
    texts = [p.text for p in parts if p.WhichOneof("content") == "text"]  # type: ignore[attr-defined]
    return "\n\n".join(texts)


def history_of(session: gateway_pb2.Session) -> list[dict[str, str]]:
    """The turns an agent receives: the summary (a user turn) first, then the turns."""
    turns = []
    if session.summary:
        turns.append({"role": "user", "content": SUMMARY_PREFIX + session.summary})
    turns += [{"role": t.role, "content": t.content} for t in session.turns]
    return turns


def _chars(session: gateway_pb2.Session) -> int:
    return len(session.summary) + sum(len(t.content) for t in session.turns)


def _exchanges(session: gateway_pb2.Session) -> int:
    return sum(1 for t in session.turns if t.role == "user")


class Conversations:
    """Sessions around agent calls: see the module docstring."""

    def __init__(
        self,
        store: SessionStore,
        *,
        ttl: float,
        policy: Callable[[str], SessionPolicy],
        summarize: Summarize | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._ttl = ttl
        self._policy = policy
        self._summarize = summarize
        self._clock = clock

    def attach(self, summarize: Summarize) -> None:
        """How older turns are summarized (the dispatcher's call of the summarizer skill)."""
        self._summarize = summarize

    async def begin(
        self,
        owner: str,
        agent: str,
        request: pb.InvokeRequest,
        *,
        overrides: Mapping[str, Any] | None = None,
    ) -> Turn:
        """``request`` with the session's turns (compacted first when past the policy: the
        agent's, with ``overrides`` of its fields, a route's, on top)."""
        context_id = request.message.context_id
        check_context_id(context_id)
        session = await self.store.get(owner, context_id)
        now = self._clock()
        if session is None:
            session = gateway_pb2.Session(context_id=context_id, created_at=now)
        policy = self._policy(agent)
        if overrides:
            policy = dataclasses.replace(policy, **overrides)
        session = await self._compact(session, policy)
        forwarded = pb.InvokeRequest()
        forwarded.CopyFrom(request)
        history = history_of(session)
        if history:
            data = struct_pb2.Struct()
            data.update({"history": history})
            forwarded.message.parts.add(media_type="application/json").data.struct_value.CopyFrom(
                data
            )
        return Turn(owner, agent, session, forwarded, _text(request.message.parts))

    async def finish(self, turn: Turn, response: pb.InvokeResponse) -> None:
        """Record the user's turn and the answer (the text of the response's artifacts).

        A compare-and-set on the session's version: when another turn of the session
        landed since this one began, the exchange is added to the session as it now
        stands, and written again."""
        answer = "\n\n".join(_text(a.parts) for a in response.artifacts)
        base: gateway_pb2.Session | None = turn.session
        for _ in range(MAX_WRITE_ATTEMPTS):
            if base is None:  # expired or deleted meanwhile: the exchange starts it again
                base = gateway_pb2.Session(
                    context_id=turn.session.context_id, created_at=self._clock()
                )
            session = gateway_pb2.Session()
            session.CopyFrom(base)
            session.turns.add(role="user", content=turn.user)
            session.turns.add(role="assistant", content=answer)
            session.turn_count += 1
            session.updated_at = self._clock()
            session.agent = turn.agent
            session.version = base.version + 1
            if await self.store.put(turn.owner, session, ttl=self._ttl, expected=base.version):
                return
            base = await self.store.get(turn.owner, turn.session.context_id)
        raise Unavailable(
            f"session {turn.session.context_id[:64]!r}: other turns kept landing first; "
            "its exchange was not recorded"
        )

    async def _compact(
        self, session: gateway_pb2.Session, policy: SessionPolicy
    ) -> gateway_pb2.Session:
        if _exchanges(session) <= policy.max_turns and _chars(session) <= policy.max_chars:
            return session
        kept = list(session.turns)
        # Where each exchange starts (its user turn); the last ``keep_last`` stay verbatim,
        # fewer when they alone are over half the characters allowed.
        starts = [i for i, t in enumerate(kept) if t.role == "user"] + [len(kept)]
        keep = min(policy.keep_last, policy.max_turns, len(starts) - 1)
        cut = starts[len(starts) - 1 - keep]
        while cut < len(kept) and sum(len(t.content) for t in kept[cut:]) > policy.max_chars // 2:
            cut = next(s for s in starts if s > cut)
        older, recent = kept[:cut], kept[cut:]
        if not older and not session.summary:
            return session
        lines = [session.summary] if session.summary else []
        lines += [f"{'User' if t.role == 'user' else 'Assistant'}: {t.content}" for t in older]
        if self._summarize is None:
            raise InvalidInput("session", "no summarizer is attached to compact it")
        text = await self._summarize(policy.summarizer, "\n".join(lines))
        compacted = gateway_pb2.Session()
        compacted.CopyFrom(session)
        compacted.summary = text[: policy.max_chars // 2]
        del compacted.turns[:]
        compacted.turns.extend(recent)
        compacted.compactions += 1
        return compacted


def check_context_id(context_id: str) -> None:
    """Refuse an empty or oversized context id (INVALID_ARGUMENT naming the field)."""
    if not context_id:
        raise InvalidInput("context_id", "is required")
    if len(context_id) > MAX_CONTEXT_ID_CHARS:
        raise InvalidInput(
            "context_id", f"{len(context_id)} characters; the limit is {MAX_CONTEXT_ID_CHARS}"
        )


__all__ = [
    "SUMMARY_PREFIX",
    "Conversations",
    "MemorySessionStore",
    "RedisSessionStore",
    "SessionPolicy",
    "SessionStore",
    "Summarize",
    "Turn",
    "check_context_id",
    "history_of",
    "summary",
]
