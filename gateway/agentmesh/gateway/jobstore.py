"""Where jobs live: their record, their event log and the queue of work to run.

Every change of a job's state is a compare-and-set in the store, together
with the state event it appends to the job's log: a cancel and a completion
cannot both win, and the loser learns which state stands. Offsets in a log are
assigned by the store, atomically with the append, so they never repeat. A
runner holds its job under a *fence* (a number the store bumps on every
claim and requeue): its appends and transitions carry it, and the store
refuses them once the job was cancelled, ended, or handed to another runner.

:class:`MemoryJobStore` keeps everything in this process (the default: a
restart forgets every job). Each of its operations completes without awaiting,
so it is atomic in the event loop, and a cancelled waiter leaves nothing
behind. :class:`RedisJobStore` keeps it in Redis, so that several gateway
replicas share one queue and one set of jobs: each transition is one Lua
script; a running job's lease is its score in a sorted set, which its runner
renews; a job whose lease lapsed goes back on the queue (its agent calls may
then run twice: jobs are at-least-once).

Redis layout (``P`` = ``agentmesh:jobs:v2``)::

    P:job:{id}         hash: state, job (Job bytes), request, fence, owner
    P:job:{id}:events  list of JobEvent bytes; the index is the offset
    P:idem:{key}       hash: job (the id), digest (of the request); expires
    P:pending          list of job ids waiting to run
    P:running          sorted set: job id -> lease expiry (unix ms)
    P:index            sorted set: job id -> creation time
    P:owner:{owner}    sorted set: that owner's job ids -> creation time
    P:open:{owner}     set: that owner's queued, running or waiting job ids
    P:waiting          sorted set: job id -> when its wait for input ends (unix ms)
    P:events / P:queued / P:cancel   pub/sub: a log grew / work queued / cancel asked

Every job has an *owner* (the principal that submitted it, see ``auth``): reads
may name the owner they are allowed to see (``owner=None``: any), so a listing of
one owner's jobs is filtered in the store, before its limit. The open (queued or
running) jobs of each owner are counted where the job's transitions happen, so
``create(max_open=...)`` enforces a per-owner quota atomically for every
replica sharing the store.

Watchers and idle workers are woken through one pub/sub connection per
gateway, not one connection each.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis.asyncio as aioredis

from agentmesh.gateway.pubsub import Subscription
from agentmesh.runtime.errors import LimitExceeded
from agentmesh.v1 import gateway_pb2
from agentmesh.v1 import messages_pb2 as pb

log = logging.getLogger("agentmesh.gateway.jobs")

TERMINAL_STATES = frozenset({pb.TASK_STATE_COMPLETED, pb.TASK_STATE_FAILED, pb.TASK_STATE_CANCELED})
OPEN_STATES = frozenset({pb.TASK_STATE_SUBMITTED, pb.TASK_STATE_WORKING})
# Not ended: queued, running, or parked waiting for input (INPUT_REQUIRED holds no runner
# and no lease: it is a stored state that any replica may resume, cancel or time out).
UNFINISHED_STATES = OPEN_STATES | {pb.TASK_STATE_INPUT_REQUIRED}

_QUEUED = "\x00queued"  # the wake-up key of idle workers


@dataclass(frozen=True, slots=True)
class Claim:
    """A job a runner took from the queue, and the fence its writes must carry."""

    job_id: str
    work: gateway_pb2.SubmitJobRequest
    fence: int


@dataclass(frozen=True, slots=True)
class Transition:
    """What a compare-and-set left: whether it won, and the record as it now stands."""

    won: bool
    job: gateway_pb2.Job | None  # None: the job is gone (expired)


class Fenced(Exception):
    """The runner's write was refused: the job ended, or is no longer this runner's."""


class JobStore(Protocol):
    """What the job manager needs from a store. Every method is safe to call concurrently."""

    async def create(
        self,
        job: gateway_pb2.Job,
        work: gateway_pb2.SubmitJobRequest,
        *,
        owner: str,
        max_open: int | None = None,
        idempotency_key: str = "",
        keep_key_for: float = 0.0,
    ) -> tuple[gateway_pb2.Job, bool]:
        """Record a new job of ``owner`` (its SUBMITTED event at offset 0) and queue it.

        With an ``idempotency_key`` seen in the last ``keep_key_for`` seconds,
        nothing is created: returns the job that key made, and False. A key
        reused for a different request raises :class:`IdempotencyConflict`.
        When ``owner`` already has ``max_open`` jobs queued or running, raises
        :class:`LimitExceeded` (checked and counted in the same atomic step).
        """

    async def claim(self, lease: float, *, wait: float) -> Claim | None:
        """The next queued job, leased to ``owner`` for ``lease`` seconds, or None after
        ``wait`` seconds. Jobs cancelled while queued are skipped."""

    async def renew(self, claim: Claim, lease: float) -> bool:
        """Extend the lease; False when the claim no longer holds (ended, cancelled, requeued)."""

    async def release(self, claim: Claim) -> None:
        """Drop the claim's lease (its runner is done with the job)."""

    async def transition(
        self,
        job: gateway_pb2.Job,
        *,
        allowed: frozenset[int],
        fence: int | None = None,
        keep_for: float | None = None,
        requeue: bool = False,
        lapsed_before: float | None = None,
    ) -> Transition:
        """Write ``job`` (its new state) and append its state event, if the stored state is
        in ``allowed`` (and the fence matches, when given; and the lease lapsed before
        ``lapsed_before`` unix seconds, when given). ``keep_for``: forget the job that many
        seconds from now. ``requeue``: bump the fence and queue the job again. Into
        INPUT_REQUIRED the runner's lease is dropped and the job waits until its
        ``input_deadline`` (see :meth:`overdue`)."""

    async def append(self, job_id: str, event: gateway_pb2.JobEvent, *, fence: int) -> int:
        """Append to a WORKING job's log; the offset it got. Raises :class:`Fenced`."""

    async def get(self, job_id: str, *, owner: str | None = None) -> gateway_pb2.Job | None:
        """The job, or None when it does not exist or (``owner`` given) is another's."""

    async def owner_of(self, job_id: str) -> str | None:
        """Whose job it is (None when it does not exist)."""

    async def events(
        self, job_id: str, from_offset: int, *, wait: float, limit: int = 256
    ) -> list[gateway_pb2.JobEvent]:
        """Events from ``from_offset`` on; waits up to ``wait`` seconds for one when none yet."""

    async def recent(
        self, limit: int, state: int = 0, *, owner: str | None = None
    ) -> list[gateway_pb2.Job]:
        """Up to ``limit`` jobs (in ``state``, when not 0; of ``owner``, when given), newest
        first, without results."""

    async def open_jobs(self, owner: str) -> int:
        """How many of ``owner``'s jobs are queued or running."""

    async def queued(self) -> int:
        """Jobs waiting to run."""

    async def request_cancel(self, job_id: str) -> None:
        """Tell whichever gateway runs the job to stop its work."""

    def cancellations(self) -> AsyncIterator[str]:
        """Ids of jobs whose cancellation was asked (from any gateway)."""

    async def lapsed(self, now: float) -> list[str]:
        """Jobs whose runner's lease lapsed before ``now`` (their gateway died), all of them."""

    async def overdue(self, now: float) -> list[str]:
        """Jobs waiting for input whose ``input_deadline`` passed before ``now``."""

    async def close(self) -> None: ...


class IdempotencyConflict(Exception):
    """An idempotency key was reused with a different request."""


def request_digest(work: gateway_pb2.SubmitJobRequest) -> str:
    """What an idempotency key stands for: the work, not how long the caller may wait.

    A retry comes with what is left of its caller's deadline (over A2A, that becomes
    ``timeout_seconds``), so the timeout is no part of the request's identity.
    """
    identity = gateway_pb2.SubmitJobRequest()
    identity.CopyFrom(work)
    identity.ClearField("timeout_seconds")
    return hashlib.sha256(identity.SerializeToString(deterministic=True)).hexdigest()


def summary(job: gateway_pb2.Job) -> gateway_pb2.Job:
    """The job without its result (what listings carry)."""
    brief = gateway_pb2.Job()
    brief.CopyFrom(job)
    brief.ClearField("result")
    return brief


class _Signals:
    """Wake-ups by key: a waiter takes the key's current event *before* it looks at the
    store, so a change made between its look and its wait still wakes it."""

    def __init__(self) -> None:
        self._events: dict[str, tuple[asyncio.Event, int]] = {}

    @contextlib.contextmanager
    def watch(self, key: str) -> Iterator[asyncio.Event]:
        event, users = self._events.get(key, (None, 0))
        if event is None:
            event = asyncio.Event()
        self._events[key] = (event, users + 1)
        try:
            yield event
        finally:
            current = self._events.get(key)
            if current is not None and current[0] is event:
                if current[1] <= 1:
                    del self._events[key]
                else:
                    self._events[key] = (event, current[1] - 1)

    def notify(self, key: str) -> None:
        entry = self._events.pop(key, None)
        if entry is not None:
            entry[0].set()  # its waiters wake; later waiters get a fresh event

    def notify_all(self) -> None:
        for key in list(self._events):
            self.notify(key)

    @property
    def watched(self) -> int:
        return sum(users for _, users in self._events.values())


async def _wait(event: asyncio.Event, seconds: float) -> None:
    if seconds <= 0:
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


def _event_at(raw: bytes | gateway_pb2.JobEvent, offset: int) -> gateway_pb2.JobEvent:
    """A stored event with the fields the store derives: its offset (and a state's count)."""
    if isinstance(raw, bytes):
        event = gateway_pb2.JobEvent.FromString(raw)
    else:
        event = gateway_pb2.JobEvent()
        event.CopyFrom(raw)
    event.offset = offset
    if event.HasField("state"):
        event.state.event_count = offset + 1
    return event


# -- in memory ---------------------------------------------------------------


@dataclass(slots=True)
class _MemoryJob:
    job: gateway_pb2.Job
    work: gateway_pb2.SubmitJobRequest
    owner: str
    events: list[gateway_pb2.JobEvent] = field(default_factory=list)
    fence: int = 0
    lease_until: float | None = None  # set while a runner holds it
    forget_at: float | None = None
    size: int = 0  # bytes held: request, record and events


class MemoryJobStore:
    """Jobs in this process only, within a memory budget (oldest finished jobs go first)."""

    def __init__(
        self, *, max_bytes: int = 256 * 1024 * 1024, clock: Callable[[], float] = time.time
    ) -> None:
        self._jobs: OrderedDict[str, _MemoryJob] = OrderedDict()  # oldest first
        self._pending: deque[str] = deque()
        self._signals = _Signals()
        self._cancels: asyncio.Queue[str] = asyncio.Queue()
        self._keys: dict[str, tuple[str, str, float]] = {}  # key -> job id, digest, until
        self._open: dict[str, set[str]] = {}  # owner -> ids of its unfinished jobs
        self._waiting: dict[str, float] = {}  # job id -> input deadline (INPUT_REQUIRED)
        self._clock = clock
        self._max_bytes = max_bytes
        self._bytes = 0

    async def create(
        self,
        job: gateway_pb2.Job,
        work: gateway_pb2.SubmitJobRequest,
        *,
        owner: str,
        max_open: int | None = None,
        idempotency_key: str = "",
        keep_key_for: float = 0.0,
    ) -> tuple[gateway_pb2.Job, bool]:
        now = self._clock()
        self._expire(now)
        digest = request_digest(work) if idempotency_key else ""
        if idempotency_key:
            known = self._keys.get(idempotency_key)
            if known is not None and known[2] > now and known[0] in self._jobs:
                if known[1] != digest:
                    raise IdempotencyConflict(idempotency_key)
                return self._read(self._jobs[known[0]]), False
        open_ids = self._open.setdefault(owner, set())
        if max_open is not None and len(open_ids) >= max_open:
            raise _quota_exceeded(owner, len(open_ids), max_open)
        size = work.ByteSize() + 2 * job.ByteSize()
        self._make_room(size)
        entry = _MemoryJob(_copy(job), work, owner, size=size)
        open_ids.add(job.job_id)
        entry.events.append(gateway_pb2.JobEvent(state=_copy(job)))
        self._jobs[job.job_id] = entry
        self._bytes += size
        if idempotency_key:
            self._keys[idempotency_key] = (job.job_id, digest, now + keep_key_for)
        self._pending.append(job.job_id)
        self._signals.notify(_QUEUED)
        return self._read(entry), True

    async def claim(self, lease: float, *, wait: float) -> Claim | None:
        with self._signals.watch(_QUEUED) as queued:
            found = self._take(lease)
            if found is not None or wait <= 0:
                return found
            await _wait(queued, wait)
        return self._take(lease)

    def _take(self, lease: float) -> Claim | None:
        while self._pending:
            job_id = self._pending.popleft()
            entry = self._jobs.get(job_id)
            if entry is None or entry.job.state != pb.TASK_STATE_SUBMITTED:
                continue  # cancelled or expired while queued
            if entry.lease_until is not None:
                continue  # already taken
            entry.fence += 1
            entry.lease_until = self._clock() + lease
            return Claim(job_id, entry.work, entry.fence)
        return None

    async def renew(self, claim: Claim, lease: float) -> bool:
        entry = self._jobs.get(claim.job_id)
        if entry is None or entry.fence != claim.fence or entry.lease_until is None:
            return False
        entry.lease_until = self._clock() + lease
        return True

    async def release(self, claim: Claim) -> None:
        entry = self._jobs.get(claim.job_id)
        if entry is not None and entry.fence == claim.fence:
            entry.lease_until = None

    async def transition(
        self,
        job: gateway_pb2.Job,
        *,
        allowed: frozenset[int],
        fence: int | None = None,
        keep_for: float | None = None,
        requeue: bool = False,
        lapsed_before: float | None = None,
    ) -> Transition:
        entry = self._jobs.get(job.job_id)
        if entry is None:
            return Transition(False, None)
        if (
            entry.job.state not in allowed
            or (fence is not None and entry.fence != fence)
            or (
                lapsed_before is not None
                and (entry.lease_until is None or entry.lease_until >= lapsed_before)
            )
        ):
            return Transition(False, self._read(entry))
        record = _copy(job)
        grown = record.ByteSize() * 2 - entry.job.ByteSize()
        entry.job = record
        entry.events.append(gateway_pb2.JobEvent(state=_copy(record)))
        entry.size += grown
        self._bytes += grown
        if job.state in TERMINAL_STATES:
            entry.lease_until = None
            self._close_open(entry.owner, job.job_id)
        if job.state == pb.TASK_STATE_INPUT_REQUIRED:
            entry.lease_until = None  # parked: no runner holds it
            self._waiting[job.job_id] = job.input_deadline
        else:
            self._waiting.pop(job.job_id, None)
        if keep_for is not None:
            entry.forget_at = self._clock() + keep_for
        if requeue:
            entry.fence += 1
            entry.lease_until = None
            self._pending.append(job.job_id)
            self._signals.notify(_QUEUED)
        self._signals.notify(job.job_id)
        return Transition(True, self._read(entry))

    async def append(self, job_id: str, event: gateway_pb2.JobEvent, *, fence: int) -> int:
        entry = self._jobs.get(job_id)
        if entry is None or entry.job.state != pb.TASK_STATE_WORKING or entry.fence != fence:
            raise Fenced(job_id)
        stored = gateway_pb2.JobEvent()
        stored.CopyFrom(event)
        entry.events.append(stored)
        size = stored.ByteSize()
        entry.size += size
        self._bytes += size
        self._signals.notify(job_id)
        if self._bytes > self._max_bytes:
            self._evict_finished()
        return len(entry.events) - 1

    async def owner_of(self, job_id: str) -> str | None:
        entry = self._jobs.get(job_id)
        return None if entry is None else entry.owner

    async def get(self, job_id: str, *, owner: str | None = None) -> gateway_pb2.Job | None:
        self._expire(self._clock())
        entry = self._jobs.get(job_id)
        if entry is None or (owner is not None and entry.owner != owner):
            return None
        return self._read(entry)

    async def events(
        self, job_id: str, from_offset: int, *, wait: float, limit: int = 256
    ) -> list[gateway_pb2.JobEvent]:
        with self._signals.watch(job_id) as changed:
            found = self._slice(job_id, from_offset, limit)
            if found or wait <= 0:
                return found
            await _wait(changed, wait)
        return self._slice(job_id, from_offset, limit)

    def _slice(self, job_id: str, from_offset: int, limit: int) -> list[gateway_pb2.JobEvent]:
        entry = self._jobs.get(job_id)
        if entry is None:
            return []
        stored = entry.events[from_offset : from_offset + limit]
        return [_event_at(e, from_offset + i) for i, e in enumerate(stored)]

    async def recent(
        self, limit: int, state: int = 0, *, owner: str | None = None
    ) -> list[gateway_pb2.Job]:
        self._expire(self._clock())
        found: list[gateway_pb2.Job] = []
        for entry in reversed(self._jobs.values()):
            if (state and entry.job.state != state) or (owner is not None and entry.owner != owner):
                continue
            found.append(summary(self._read(entry)))
            if len(found) >= limit:
                break
        return found

    async def queued(self) -> int:
        return len(self._pending)

    async def open_jobs(self, owner: str) -> int:
        return len(self._open.get(owner, ()))

    def _close_open(self, owner: str, job_id: str) -> None:
        open_ids = self._open.get(owner)
        if open_ids is not None:
            open_ids.discard(job_id)
            if not open_ids:
                del self._open[owner]

    async def request_cancel(self, job_id: str) -> None:
        self._cancels.put_nowait(job_id)

    async def cancellations(self) -> AsyncIterator[str]:
        while True:
            yield await self._cancels.get()

    async def lapsed(self, now: float) -> list[str]:
        return []  # every runner is in this process

    async def overdue(self, now: float) -> list[str]:
        return [job_id for job_id, until in self._waiting.items() if until < now]

    async def close(self) -> None:
        self._signals.notify_all()

    @property
    def bytes_held(self) -> int:
        return self._bytes

    def _read(self, entry: _MemoryJob) -> gateway_pb2.Job:
        job = _copy(entry.job)
        job.event_count = len(entry.events)
        return job

    def _make_room(self, size: int) -> None:
        """Forget the oldest finished jobs until ``size`` more bytes fit the budget."""
        self._evict_finished(size)
        if self._bytes + size <= self._max_bytes:
            return
        raise LimitExceeded(
            "jobs",
            f"the job store holds {self._bytes} bytes of unfinished jobs; its budget is "
            f"{self._max_bytes} bytes",
        )

    def _evict_finished(self, room: int = 0) -> None:
        for job_id in [k for k, e in self._jobs.items() if e.job.state in TERMINAL_STATES]:
            if self._bytes + room <= self._max_bytes:
                return
            self._forget(job_id)

    def _forget(self, job_id: str) -> None:
        entry = self._jobs.pop(job_id, None)
        self._waiting.pop(job_id, None)
        if entry is not None:
            self._close_open(entry.owner, job_id)
            self._bytes -= entry.size
            self._signals.notify(job_id)

    def _expire(self, now: float) -> None:
        for job_id in [k for k, e in self._jobs.items() if e.forget_at and e.forget_at <= now]:
            self._forget(job_id)
        for key in [k for k, (_, _, until) in self._keys.items() if until <= now]:
            del self._keys[key]


# -- in Redis ----------------------------------------------------------------

PREFIX = "agentmesh:jobs:v2"

# Each script is one atomic step. Keys other than KEYS[] are derived from the prefix,
# so the store needs one Redis (not a cluster).
_CREATE = """
-- KEYS: job, events, pending, index, idempotency key, owner's index, owner's open set
-- ARGV: id, job bytes, request bytes, created_at, key ttl ms ('0': no key), digest,
--       queued channel, job key prefix, event bytes, max open ('' no limit), owner
if ARGV[5] ~= '0' then
  local known = redis.call('HMGET', KEYS[5], 'job', 'digest')
  if known[1] and redis.call('EXISTS', ARGV[8] .. known[1]) == 1 then
    return {0, known[1], known[2]}
  end
end
if ARGV[10] ~= '' then
  local open = redis.call('SCARD', KEYS[7])
  if open >= tonumber(ARGV[10]) then
    -- Forget members whose job is gone (expired or evicted) before refusing.
    for _, id in ipairs(redis.call('SMEMBERS', KEYS[7])) do
      if redis.call('EXISTS', ARGV[8] .. id) == 0 then redis.call('SREM', KEYS[7], id) end
    end
    open = redis.call('SCARD', KEYS[7])
    if open >= tonumber(ARGV[10]) then return {-1, open} end
  end
end
if ARGV[5] ~= '0' then
  redis.call('HSET', KEYS[5], 'job', ARGV[1], 'digest', ARGV[6])
  redis.call('PEXPIRE', KEYS[5], ARGV[5])
end
redis.call('HSET', KEYS[1], 'state', '1', 'job', ARGV[2], 'request', ARGV[3], 'fence', '0',
           'owner', ARGV[11])
redis.call('RPUSH', KEYS[2], ARGV[9])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1])
redis.call('ZADD', KEYS[6], ARGV[4], ARGV[1])
redis.call('SADD', KEYS[7], ARGV[1])
redis.call('RPUSH', KEYS[3], ARGV[1])
redis.call('PUBLISH', ARGV[7], ARGV[1])
return {1}
"""

_CLAIM = """
-- KEYS: pending, running; ARGV: job key prefix, lease expiry ms
for _ = 1, 1000 do
  local id = redis.call('LPOP', KEYS[1])
  if not id then return false end
  local key = ARGV[1] .. id
  if redis.call('HGET', key, 'state') == '1' and not redis.call('ZSCORE', KEYS[2], id) then
    local fence = redis.call('HINCRBY', key, 'fence', 1)
    redis.call('ZADD', KEYS[2], ARGV[2], id)
    return {id, redis.call('HGET', key, 'request'), fence}
  end
end
return false
"""

_RENEW = """
-- KEYS: job, running; ARGV: id, fence, lease expiry ms
if redis.call('HGET', KEYS[1], 'fence') ~= ARGV[2] or not redis.call('ZSCORE', KEYS[2], ARGV[1])
then return 0 end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
"""

_RELEASE = """
-- KEYS: job, running; ARGV: id, fence
if redis.call('HGET', KEYS[1], 'fence') == ARGV[2] then redis.call('ZREM', KEYS[2], ARGV[1]) end
return 1
"""

_TRANSITION = """
-- KEYS: job, events, running, pending, waiting
-- ARGV: id, allowed (',1,2,'), fence ('' any), new state, job bytes, event bytes,
--       keep ms ('0' none), requeue ('1'), lapsed before ms ('' unchecked), terminal ('1'),
--       events channel, queued channel, owners' open-set prefix, input deadline ms
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return -2 end
if not string.find(ARGV[2], ',' .. state .. ',', 1, true) then return -1 end
if ARGV[3] ~= '' and redis.call('HGET', KEYS[1], 'fence') ~= ARGV[3] then return -1 end
if ARGV[9] ~= '' then
  local until_ms = redis.call('ZSCORE', KEYS[3], ARGV[1])
  if not until_ms or tonumber(until_ms) >= tonumber(ARGV[9]) then return -1 end
end
redis.call('HSET', KEYS[1], 'state', ARGV[4], 'job', ARGV[5])
local length = redis.call('RPUSH', KEYS[2], ARGV[6])
if ARGV[10] == '1' then
  redis.call('ZREM', KEYS[3], ARGV[1])
  local owner = redis.call('HGET', KEYS[1], 'owner')
  if owner then redis.call('SREM', ARGV[13] .. owner, ARGV[1]) end
end
if ARGV[4] == '6' then
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('ZADD', KEYS[5], ARGV[14], ARGV[1])
else
  redis.call('ZREM', KEYS[5], ARGV[1])
end
if ARGV[8] == '1' then
  redis.call('HINCRBY', KEYS[1], 'fence', 1)
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('RPUSH', KEYS[4], ARGV[1])
  redis.call('PUBLISH', ARGV[12], ARGV[1])
end
if ARGV[7] ~= '0' then
  redis.call('PEXPIRE', KEYS[1], ARGV[7])
  redis.call('PEXPIRE', KEYS[2], ARGV[7])
end
redis.call('PUBLISH', ARGV[11], ARGV[1])
return length - 1
"""

_APPEND = """
-- KEYS: job, events; ARGV: id, fence, event bytes, events channel
if redis.call('HGET', KEYS[1], 'state') ~= '2' or redis.call('HGET', KEYS[1], 'fence') ~= ARGV[2]
then return -1 end
local length = redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[1])
return length - 1
"""


async def _redis(reply: Any) -> Any:
    """Await a redis-py command (its stubs type replies as ``Awaitable[X] | X``)."""
    return await reply


class RedisJobStore:
    """Jobs in Redis, shared by every gateway replica.

    Give it a client whose pool is bounded and blocking
    (``redis.asyncio.BlockingConnectionPool``): every command here is short, so
    watchers and workers share the pool, and wake-ups come through one pub/sub
    connection that :meth:`start` opens.
    """

    # Seconds a waiter sleeps at most without a wake-up (a lost pub/sub message costs this).
    FALLBACK_POLL = 5.0

    def __init__(self, client: aioredis.Redis, *, prefix: str = PREFIX) -> None:
        self._redis = client
        self._p = prefix
        self._signals = _Signals()
        self._cancels: asyncio.Queue[str] = asyncio.Queue()
        # Whatever changed while unsubscribed: everyone looks again on (re)connecting.
        self._subscription = Subscription(
            client,
            {
                f"{prefix}:events": self._signals.notify,
                f"{prefix}:queued": lambda _: self._signals.notify(_QUEUED),
                f"{prefix}:cancel": self._cancels.put_nowait,
            },
            name="jobstore-pubsub",
            on_connect=self._signals.notify_all,
        )
        self._scripts = {
            name: client.register_script(source)
            for name, source in {
                "create": _CREATE,
                "claim": _CLAIM,
                "renew": _RENEW,
                "release": _RELEASE,
                "transition": _TRANSITION,
                "append": _APPEND,
            }.items()
        }

    def _key(self, job_id: str, part: str = "") -> str:
        return f"{self._p}:job:{job_id}{':' + part if part else ''}"

    async def start(self) -> None:
        """Open the pub/sub connection that wakes this process's watchers and workers."""
        self._subscription.start()

    async def create(
        self,
        job: gateway_pb2.Job,
        work: gateway_pb2.SubmitJobRequest,
        *,
        owner: str,
        max_open: int | None = None,
        idempotency_key: str = "",
        keep_key_for: float = 0.0,
    ) -> tuple[gateway_pb2.Job, bool]:
        digest = request_digest(work) if idempotency_key else ""
        key_ms = max(1, int(keep_key_for * 1000)) if idempotency_key else 0
        record = job.SerializeToString()
        reply = await self._scripts["create"](
            keys=[
                self._key(job.job_id),
                self._key(job.job_id, "events"),
                f"{self._p}:pending",
                f"{self._p}:index",
                f"{self._p}:idem:{idempotency_key}",
                f"{self._p}:owner:{owner}",
                f"{self._p}:open:{owner}",
            ],
            args=[
                job.job_id,
                record,
                work.SerializeToString(),
                job.created_at,
                key_ms,
                digest,
                f"{self._p}:queued",
                self._key(""),
                gateway_pb2.JobEvent(state=job).SerializeToString(),
                "" if max_open is None else max_open,
                owner,
            ],
        )
        if int(reply[0]) == -1:
            raise _quota_exceeded(owner, int(reply[1]), max_open or 0)
        if int(reply[0]) == 1:
            created = _copy(job)
            created.event_count = 1
            return created, True
        if reply[2].decode() != digest:
            raise IdempotencyConflict(idempotency_key)
        existing = await self.get(reply[1].decode())
        if existing is None:  # expired between the two reads: the key named a job now gone
            raise IdempotencyConflict(idempotency_key)
        return existing, False

    async def claim(self, lease: float, *, wait: float) -> Claim | None:
        with self._signals.watch(_QUEUED) as queued:
            found = await self._take(lease)
            if found is not None or wait <= 0:
                return found
            await _wait(queued, wait)
        return await self._take(lease)

    async def _take(self, lease: float) -> Claim | None:
        reply = await self._scripts["claim"](
            keys=[f"{self._p}:pending", f"{self._p}:running"],
            args=[self._key(""), _ms(time.time() + lease)],
        )
        if not reply:
            return None
        job_id, request, fence = reply
        return Claim(job_id.decode(), gateway_pb2.SubmitJobRequest.FromString(request), int(fence))

    async def renew(self, claim: Claim, lease: float) -> bool:
        renewed = await self._scripts["renew"](
            keys=[self._key(claim.job_id), f"{self._p}:running"],
            args=[claim.job_id, claim.fence, _ms(time.time() + lease)],
        )
        return bool(renewed)

    async def release(self, claim: Claim) -> None:
        await self._scripts["release"](
            keys=[self._key(claim.job_id), f"{self._p}:running"],
            args=[claim.job_id, claim.fence],
        )

    async def transition(
        self,
        job: gateway_pb2.Job,
        *,
        allowed: frozenset[int],
        fence: int | None = None,
        keep_for: float | None = None,
        requeue: bool = False,
        lapsed_before: float | None = None,
    ) -> Transition:
        record = _copy(job)
        record.ClearField("event_count")  # derived from the log's length when read
        raw = record.SerializeToString()
        offset = await self._scripts["transition"](
            keys=[
                self._key(job.job_id),
                self._key(job.job_id, "events"),
                f"{self._p}:running",
                f"{self._p}:pending",
                f"{self._p}:waiting",
            ],
            args=[
                job.job_id,
                "," + ",".join(str(s) for s in sorted(allowed)) + ",",
                "" if fence is None else fence,
                job.state,
                raw,
                gateway_pb2.JobEvent(state=record).SerializeToString(),
                0 if keep_for is None else max(1, int(keep_for * 1000)),
                "1" if requeue else "0",
                "" if lapsed_before is None else _ms(lapsed_before),
                "1" if job.state in TERMINAL_STATES else "0",
                f"{self._p}:events",
                f"{self._p}:queued",
                f"{self._p}:open:",
                _ms(job.input_deadline),
            ],
        )
        offset = int(offset)
        if offset == -2:
            return Transition(False, None)
        if offset == -1:
            return Transition(False, await self.get(job.job_id))
        record.event_count = offset + 1
        return Transition(True, record)

    async def append(self, job_id: str, event: gateway_pb2.JobEvent, *, fence: int) -> int:
        offset = int(
            await self._scripts["append"](
                keys=[self._key(job_id), self._key(job_id, "events")],
                args=[job_id, fence, event.SerializeToString(), f"{self._p}:events"],
            )
        )
        if offset < 0:
            raise Fenced(job_id)
        return offset

    async def owner_of(self, job_id: str) -> str | None:
        raw: bytes | None = await self._redis.hget(self._key(job_id), "owner")  # type: ignore[misc]
        return None if raw is None else raw.decode()

    async def get(self, job_id: str, *, owner: str | None = None) -> gateway_pb2.Job | None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hmget(self._key(job_id), ["job", "owner"])
            pipe.llen(self._key(job_id, "events"))
            (raw, raw_owner), count = await pipe.execute()
        if raw is None or (owner is not None and (raw_owner or b"").decode() != owner):
            return None
        job = gateway_pb2.Job.FromString(raw)
        job.event_count = int(count)
        return job

    async def events(
        self, job_id: str, from_offset: int, *, wait: float, limit: int = 256
    ) -> list[gateway_pb2.JobEvent]:
        with self._signals.watch(job_id) as changed:
            found = await self._slice(job_id, from_offset, limit)
            if found or wait <= 0:
                return found
            await _wait(changed, min(wait, self.FALLBACK_POLL))
        return await self._slice(job_id, from_offset, limit)

    async def _slice(self, job_id: str, from_offset: int, limit: int) -> list[gateway_pb2.JobEvent]:
        raws = await _redis(
            self._redis.lrange(self._key(job_id, "events"), from_offset, from_offset + limit - 1)
        )
        return [_event_at(raw, from_offset + i) for i, raw in enumerate(raws)]

    async def recent(
        self, limit: int, state: int = 0, *, owner: str | None = None
    ) -> list[gateway_pb2.Job]:
        found: list[gateway_pb2.Job] = []
        start, page = 0, max(limit, 100)
        index = f"{self._p}:index" if owner is None else f"{self._p}:owner:{owner}"
        while len(found) < limit:
            ids = await self._redis.zrevrange(index, start, start + page - 1)
            if not ids:
                break
            start += page
            async with self._redis.pipeline(transaction=False) as pipe:
                for raw_id in ids:
                    pipe.hmget(self._key(raw_id.decode()), ["state", "job"])
                rows = await pipe.execute()
            gone = []
            for raw_id, (raw_state, raw_job) in zip(ids, rows, strict=True):
                if raw_job is None:
                    gone.append(raw_id)
                elif (not state or int(raw_state) == state) and len(found) < limit:
                    found.append(summary(gateway_pb2.Job.FromString(raw_job)))
            if gone:
                await self._redis.zrem(index, *gone)
                start -= len(gone)
        return found

    async def queued(self) -> int:
        return int(await _redis(self._redis.llen(f"{self._p}:pending")))

    async def open_jobs(self, owner: str) -> int:
        return int(await _redis(self._redis.scard(f"{self._p}:open:{owner}")))

    async def request_cancel(self, job_id: str) -> None:
        await self._redis.publish(f"{self._p}:cancel", job_id)

    async def cancellations(self) -> AsyncIterator[str]:
        while True:
            yield await self._cancels.get()

    async def lapsed(self, now: float) -> list[str]:
        ids = await self._redis.zrangebyscore(f"{self._p}:running", "-inf", f"({_ms(now)}")
        return [raw.decode() for raw in ids]

    async def overdue(self, now: float) -> list[str]:
        ids = await self._redis.zrangebyscore(f"{self._p}:waiting", "-inf", f"({_ms(now)}")
        return [raw.decode() for raw in ids]

    async def close(self) -> None:
        """Stop the pub/sub listener (the Redis client is shared and closed by its owner)."""
        await self._subscription.close()
        self._signals.notify_all()


def _quota_exceeded(owner: str, open_jobs: int, limit: int) -> LimitExceeded:
    return LimitExceeded(
        "max_jobs",
        f"{open_jobs} jobs of {owner} are queued or running; the limit is {limit} "
        "(max_jobs of the key)",
    )


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _copy(job: gateway_pb2.Job) -> gateway_pb2.Job:
    copy = gateway_pb2.Job()
    copy.CopyFrom(job)
    return copy


__all__ = [
    "OPEN_STATES",
    "TERMINAL_STATES",
    "UNFINISHED_STATES",
    "Claim",
    "Fenced",
    "IdempotencyConflict",
    "JobStore",
    "MemoryJobStore",
    "RedisJobStore",
    "Transition",
    "summary",
]
