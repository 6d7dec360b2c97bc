"""Where jobs live: their record, their event log and the queue of work to run.

:class:`MemoryJobStore` keeps everything in this process (the default: a
restart forgets every job). :class:`RedisJobStore` keeps it in Redis, so that
several gateway replicas share one queue and one set of jobs, and a stopped
or crashed gateway loses none: each running job holds a lease that its
gateway renews; a job whose lease lapses goes back on the queue for any
replica to pick up (agent calls may then run twice: jobs are at-least-once).

Redis layout (``P`` = ``agentmesh:jobs:v1``)::

    P:job:{id}        hash: job (Job bytes), request (SubmitJobRequest bytes)
    P:job:{id}:events stream of JobEvent bytes; entry id 0-(offset+1)
    P:job:{id}:lease  string: the id of the gateway running it (expires)
    P:pending         list of job ids waiting to run
    P:index           sorted set of job ids by creation time
    P:cancel          pub/sub channel of job ids whose cancellation was asked
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis.asyncio as aioredis

from agentmesh.v1 import gateway_pb2
from agentmesh.v1 import messages_pb2 as pb


async def _redis(reply: Any) -> Any:
    """Await a redis-py command (its stubs type replies as ``Awaitable[X] | X``)."""
    return await reply


TERMINAL_STATES = frozenset({pb.TASK_STATE_COMPLETED, pb.TASK_STATE_FAILED, pb.TASK_STATE_CANCELED})


class JobStore(Protocol):
    """What the job manager needs from a store. Every method is safe to call concurrently."""

    async def create(self, job: gateway_pb2.Job, work: gateway_pb2.SubmitJobRequest) -> None:
        """Record a new job and queue it to run."""

    async def claim(
        self, owner: str, *, wait: float
    ) -> tuple[str, gateway_pb2.SubmitJobRequest] | None:
        """The next queued job (now leased to ``owner``), or None after ``wait`` seconds."""

    async def renew(self, job_id: str, owner: str, lease: float) -> None: ...

    async def queued(self) -> int:
        """Jobs waiting to run."""

    async def release(self, job_id: str, owner: str) -> None:
        """Drop ``owner``'s lease (the job finished, or was handed back)."""

    async def requeue(self, job_id: str) -> None:
        """Put a job back on the queue (its runner stopped before it finished)."""

    async def get(self, job_id: str) -> gateway_pb2.Job | None: ...

    async def save(self, job: gateway_pb2.Job, *, keep_for: float | None = None) -> None:
        """Write the record; with ``keep_for``, forget the job that many seconds from now."""

    async def append(self, job_id: str, offset: int, event: gateway_pb2.JobEvent) -> None:
        """Add the event at ``offset``: the job's one runner appends in order, from
        the job's event count when it took the job (a requeued run continues the log)."""

    async def event_count(self, job_id: str) -> int: ...

    async def events(
        self, job_id: str, from_offset: int, *, wait: float
    ) -> list[gateway_pb2.JobEvent]:
        """Events from ``from_offset`` on; waits up to ``wait`` seconds for one when none yet."""

    async def recent(self, limit: int) -> list[gateway_pb2.Job]:
        """Up to ``limit`` jobs, newest first."""

    async def request_cancel(self, job_id: str) -> None:
        """Tell whichever gateway runs the job to cancel it."""

    def cancellations(self) -> AsyncIterator[str]:
        """Ids of jobs whose cancellation was asked, as asked (from any gateway)."""

    async def stale(self, limit: int) -> list[str]:
        """Running jobs whose lease has lapsed (their gateway died)."""

    async def close(self) -> None: ...


# -- in memory ---------------------------------------------------------------


@dataclass(slots=True)
class _MemoryJob:
    job: gateway_pb2.Job
    work: gateway_pb2.SubmitJobRequest
    events: list[gateway_pb2.JobEvent] = field(default_factory=list)
    forget_at: float | None = None


class MemoryJobStore:
    """Jobs in this process only."""

    def __init__(self, *, clock: Callable[[], float] | None = None) -> None:
        self._jobs: dict[str, _MemoryJob] = {}
        self._pending: asyncio.Queue[str] = asyncio.Queue()
        self._changed = asyncio.Condition()
        self._cancels: asyncio.Queue[str] = asyncio.Queue()
        self._clock = clock or asyncio.get_running_loop().time

    async def create(self, job: gateway_pb2.Job, work: gateway_pb2.SubmitJobRequest) -> None:
        self._expire()
        self._jobs[job.job_id] = _MemoryJob(_copy(job), work)
        self._pending.put_nowait(job.job_id)

    async def claim(
        self, owner: str, *, wait: float
    ) -> tuple[str, gateway_pb2.SubmitJobRequest] | None:
        try:
            job_id = await asyncio.wait_for(self._pending.get(), wait)
        except TimeoutError:
            return None
        found = self._jobs.get(job_id)
        return None if found is None else (job_id, found.work)

    async def renew(self, job_id: str, owner: str, lease: float) -> None:
        """Leases matter only when several processes share the store."""

    async def queued(self) -> int:
        return self._pending.qsize()

    async def release(self, job_id: str, owner: str) -> None:
        """Leases matter only when several processes share the store."""

    async def requeue(self, job_id: str) -> None:
        self._pending.put_nowait(job_id)

    async def get(self, job_id: str) -> gateway_pb2.Job | None:
        self._expire()
        found = self._jobs.get(job_id)
        return None if found is None else _copy(found.job)

    async def save(self, job: gateway_pb2.Job, *, keep_for: float | None = None) -> None:
        found = self._jobs.get(job.job_id)
        if found is None:
            return
        found.job = _copy(job)
        if keep_for is not None:
            found.forget_at = self._clock() + keep_for
        async with self._changed:
            self._changed.notify_all()

    async def append(self, job_id: str, offset: int, event: gateway_pb2.JobEvent) -> None:
        found = self._jobs.get(job_id)
        if found is None:
            return
        found.events.append(event)
        async with self._changed:
            self._changed.notify_all()

    async def event_count(self, job_id: str) -> int:
        found = self._jobs.get(job_id)
        return 0 if found is None else len(found.events)

    async def events(
        self, job_id: str, from_offset: int, *, wait: float
    ) -> list[gateway_pb2.JobEvent]:
        found = self._jobs.get(job_id)
        if found is None:
            return []
        if len(found.events) <= from_offset and wait > 0:
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._changed.wait_for(lambda: len(found.events) > from_offset), wait
                    )
        return list(found.events[from_offset:])

    async def recent(self, limit: int) -> list[gateway_pb2.Job]:
        self._expire()
        newest = sorted(self._jobs.values(), key=lambda j: j.job.created_at, reverse=True)
        return [_copy(j.job) for j in newest[:limit]]

    async def request_cancel(self, job_id: str) -> None:
        self._cancels.put_nowait(job_id)

    async def cancellations(self) -> AsyncIterator[str]:
        while True:
            yield await self._cancels.get()

    async def stale(self, limit: int) -> list[str]:
        return []  # every runner is in this process

    async def close(self) -> None:
        self._jobs.clear()

    def _expire(self) -> None:
        now = self._clock()
        for job_id in [k for k, j in self._jobs.items() if j.forget_at and j.forget_at <= now]:
            del self._jobs[job_id]


# -- in Redis ----------------------------------------------------------------

PREFIX = "agentmesh:jobs:v1"


class RedisJobStore:
    """Jobs in Redis, shared by every gateway replica."""

    def __init__(self, client: aioredis.Redis, *, prefix: str = PREFIX) -> None:
        self._redis = client
        self._p = prefix
        self._recent: deque[str] = deque(maxlen=1024)

    def _key(self, job_id: str, part: str = "") -> str:
        return f"{self._p}:job:{job_id}{':' + part if part else ''}"

    async def create(self, job: gateway_pb2.Job, work: gateway_pb2.SubmitJobRequest) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                self._key(job.job_id),
                mapping={"job": job.SerializeToString(), "request": work.SerializeToString()},
            )
            pipe.zadd(f"{self._p}:index", {job.job_id: job.created_at})
            pipe.rpush(f"{self._p}:pending", job.job_id)
            await pipe.execute()

    async def claim(
        self, owner: str, *, wait: float
    ) -> tuple[str, gateway_pb2.SubmitJobRequest] | None:
        popped = await _redis(self._redis.blpop([f"{self._p}:pending"], timeout=max(wait, 0.01)))
        if popped is None:
            return None
        job_id = popped[1].decode()
        await self._redis.set(self._key(job_id, "lease"), owner, px=30_000)
        raw = await _redis(self._redis.hget(self._key(job_id), "request"))
        if raw is None:
            return None  # expired while queued
        return job_id, gateway_pb2.SubmitJobRequest.FromString(raw)

    async def queued(self) -> int:
        return int(await _redis(self._redis.llen(f"{self._p}:pending")))

    async def renew(self, job_id: str, owner: str, lease: float) -> None:
        await self._redis.set(self._key(job_id, "lease"), owner, px=int(lease * 1000))

    async def release(self, job_id: str, owner: str) -> None:
        key = self._key(job_id, "lease")
        current = await _redis(self._redis.get(key))
        if current is not None and current.decode() == owner:
            await self._redis.delete(key)

    async def requeue(self, job_id: str) -> None:
        await _redis(self._redis.rpush(f"{self._p}:pending", job_id))

    async def get(self, job_id: str) -> gateway_pb2.Job | None:
        raw = await _redis(self._redis.hget(self._key(job_id), "job"))
        return None if raw is None else gateway_pb2.Job.FromString(raw)

    async def save(self, job: gateway_pb2.Job, *, keep_for: float | None = None) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._key(job.job_id), mapping={"job": job.SerializeToString()})
            if keep_for is not None:
                ms = max(1, int(keep_for * 1000))
                pipe.pexpire(self._key(job.job_id), ms)
                pipe.pexpire(self._key(job.job_id, "events"), ms)
            await pipe.execute()

    async def append(self, job_id: str, offset: int, event: gateway_pb2.JobEvent) -> None:
        # Explicit entry ids make offsets addressable: XREAD from 0-N returns offsets >= N.
        await self._redis.xadd(
            self._key(job_id, "events"), {"e": event.SerializeToString()}, id=f"0-{offset + 1}"
        )

    async def event_count(self, job_id: str) -> int:
        return int(await self._redis.xlen(self._key(job_id, "events")))

    async def events(
        self, job_id: str, from_offset: int, *, wait: float
    ) -> list[gateway_pb2.JobEvent]:
        key = self._key(job_id, "events")
        block = int(wait * 1000) if wait > 0 else None
        reply = await self._redis.xread({key: f"0-{from_offset}"}, count=256, block=block)
        events: list[gateway_pb2.JobEvent] = []
        for _, entries in reply or ():
            for _, fields in entries:
                events.append(gateway_pb2.JobEvent.FromString(fields[b"e"]))
        return events

    async def recent(self, limit: int) -> list[gateway_pb2.Job]:
        ids = await self._redis.zrevrange(f"{self._p}:index", 0, limit * 2)
        jobs: list[gateway_pb2.Job] = []
        gone: list[bytes] = []
        for raw_id in ids:
            job = await self.get(raw_id.decode())
            if job is None:
                gone.append(raw_id)
            elif len(jobs) < limit:
                jobs.append(job)
        if gone:
            await self._redis.zrem(f"{self._p}:index", *gone)
        return jobs

    async def request_cancel(self, job_id: str) -> None:
        await self._redis.publish(f"{self._p}:cancel", job_id)

    async def cancellations(self) -> AsyncIterator[str]:
        pubsub = self._redis.pubsub()
        await pubsub.subscribe(f"{self._p}:cancel")
        try:
            async for message in pubsub.listen():
                if message.get("type") == "message":
                    yield message["data"].decode()
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def stale(self, limit: int) -> list[str]:
        ids = await self._redis.zrevrange(f"{self._p}:index", 0, limit)
        lapsed = []
        for raw_id in ids:
            job_id = raw_id.decode()
            job = await self.get(job_id)
            if job is None or job.state != pb.TASK_STATE_WORKING:
                continue
            # Claim the requeue so that only one replica puts the job back.
            if await self._redis.set(self._key(job_id, "lease"), "requeue", nx=True, px=30_000):
                lapsed.append(job_id)
        return lapsed

    async def close(self) -> None:
        """The Redis client is shared and closed by its owner."""


def _copy(job: gateway_pb2.Job) -> gateway_pb2.Job:
    copy = gateway_pb2.Job()
    copy.CopyFrom(job)
    return copy


__all__ = ["TERMINAL_STATES", "JobStore", "MemoryJobStore", "RedisJobStore"]
