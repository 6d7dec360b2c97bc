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
last turn. Two turns of one session sent at once both run; the one that
finishes last writes the session (its turns are not merged).

Redis layout (``P`` = ``agentmesh:sessions:v1``, ``h(x)`` a SHA-256 hex digest)::

    P:s:{h(owner, context_id)}   Session bytes; expires ttl after the last turn
    P:o:{h(owner)}               sorted set: that owner's context ids -> last use (unix s)
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis
from google.protobuf import struct_pb2

from agentmesh.runtime.errors import InvalidInput
from agentmesh.v1 import gateway_pb2
from agentmesh.v1 import messages_pb2 as pb

MAX_CONTEXT_ID_CHARS = 256
"""Longest accepted ``context_id``."""

SUMMARY_PREFIX = "Summary of the earlier conversation: "
"""How the summary turn starts in the history an agent receives."""


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

    async def put(self, owner: str, session: gateway_pb2.Session, *, ttl: float) -> None: ...

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

    async def put(self, owner: str, session: gateway_pb2.Session, *, ttl: float) -> None:
        key = (owner, session.context_id)
        self._sessions[key] = (self._clock() + ttl, session.SerializeToString())
        self._sessions.move_to_end(key)
        while len(self._sessions) > self._max:
            self._sessions.popitem(last=False)

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


class RedisSessionStore:
    """Sessions in Redis, shared by every gateway replica (layout in the module docstring)."""

    PREFIX = "agentmesh:sessions:v1"

    def __init__(self, client: aioredis.Redis, *, prefix: str = PREFIX) -> None:
        self._redis = client
        self._prefix = prefix

    def _session_key(self, owner: str, context_id: str) -> str:
        return f"{self._prefix}:s:{_digest(owner, context_id)}"

    def _owner_key(self, owner: str) -> str:
        return f"{self._prefix}:o:{_digest(owner)}"

    async def get(self, owner: str, context_id: str) -> gateway_pb2.Session | None:
        raw = await self._redis.get(self._session_key(owner, context_id))
        return None if raw is None else gateway_pb2.Session.FromString(raw)

    async def put(self, owner: str, session: gateway_pb2.Session, *, ttl: float) -> None:
        index = self._owner_key(owner)
        now = time.time()
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(
                self._session_key(owner, session.context_id),
                session.SerializeToString(),
                px=max(1, int(ttl * 1000)),
            )
            pipe.zadd(index, {session.context_id: now})
            pipe.zremrangebyscore(index, "-inf", now - ttl)  # sessions that expired since
            pipe.pexpire(index, max(1, int(ttl * 1000)))
            await pipe.execute()

    async def list(self, owner: str, limit: int) -> list[gateway_pb2.Session]:
        ids = await self._redis.zrevrange(self._owner_key(owner), 0, max(0, limit - 1))
        if not ids:
            return []
        names = [i.decode() if isinstance(i, bytes) else str(i) for i in ids]
        raws = await self._redis.mget([self._session_key(owner, n) for n in names])
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

    async def begin(self, owner: str, agent: str, request: pb.InvokeRequest) -> Turn:
        """``request`` with the session's turns (compacted first when past the policy)."""
        context_id = request.message.context_id
        check_context_id(context_id)
        session = await self.store.get(owner, context_id)
        now = self._clock()
        if session is None:
            session = gateway_pb2.Session(context_id=context_id, created_at=now)
        session = await self._compact(session, self._policy(agent))
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
        """Record the user's turn and the answer (the text of the response's artifacts)."""
        answer = "\n\n".join(_text(a.parts) for a in response.artifacts)
        session = gateway_pb2.Session()
        session.CopyFrom(turn.session)
        session.turns.add(role="user", content=turn.user)
        session.turns.add(role="assistant", content=answer)
        session.turn_count += 1
        session.updated_at = self._clock()
        session.agent = turn.agent
        await self.store.put(turn.owner, session, ttl=self._ttl)

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
