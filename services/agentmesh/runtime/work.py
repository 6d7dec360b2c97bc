"""CPU-heavy work of agents, run where it can be stopped.

An agent hands its pure, CPU-bound function to :func:`offload`::

    report = await offload(logic.analyze, text)

While an agent serves a call, the function runs in one of the server's work
processes (``work_processes`` of them, started on first use), so:

- the agent's event loop stays free: health checks, other calls and the drain
  go on while the work runs (a thread would hold the GIL);
- when the call is cancelled or its deadline passes, the work stops: the
  process is interrupted (SIGUSR1 raises in the function, which unwinds), or
  killed and replaced if it does not come back within ``STOP_GRACE`` seconds
  (a long C call such as one regex match cannot be interrupted). Each such
  call is counted, in :attr:`WorkPool.abandoned` and the
  ``agentmesh_work_abandoned`` metric.

``fn`` must be importable by name (a module-level function) and its arguments
and result must pickle. :class:`~agentmesh.runtime.errors.AgentError` raised
by ``fn`` reaches the caller with its code and message; any other exception
becomes an internal error whose traceback is logged.

Outside a served call (a unit test calling ``agent.invoke``) ``fn`` simply
runs in the calling thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import pickle
import signal
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar, cast

from agentmesh.runtime.errors import AgentError, DeadlineExceeded, ErrorCode
from agentmesh.telemetry.metrics import WORK_ABANDONED

log = logging.getLogger("agentmesh.work")

P = ParamSpec("P")
T = TypeVar("T")

STOP_GRACE = 1.0
"""Seconds an interrupted work process gets to unwind before it is killed."""

WORKER_MODULE = "agentmesh.runtime._worker"
_HEADER = struct.Struct(">I")

# Replies from a work process (see agentmesh.runtime._worker).
OK, AGENT_ERROR, ERROR, ABANDONED = "ok", "agent_error", "error", "abandoned"


class WorkError(RuntimeError):
    """``fn`` raised something other than an AgentError in its work process."""


@dataclass(frozen=True, slots=True)
class _CallWork:
    pool: WorkPool
    deadline: float | None  # time.monotonic() seconds


_current: contextvars.ContextVar[_CallWork | None] = contextvars.ContextVar(
    "agentmesh_work", default=None
)


def bind(pool: WorkPool, deadline: float | None) -> None:
    """Make ``pool`` and ``deadline`` those of the current call (the servicer does this)."""
    _current.set(_CallWork(pool, deadline))


async def offload(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """Run ``fn(*args, **kwargs)`` in the current call's work pool (see the module doc)."""
    call = _current.get()
    if call is None:
        return fn(*args, **kwargs)
    return await call.pool.run(fn, args, kwargs, deadline=call.deadline)


class _Worker:
    """One work process, talking length-prefixed pickles over its stdin and stdout."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self._size: int | None = None  # a reply's length, read before its body arrived

    @property
    def pid(self) -> int:
        return self.process.pid

    async def send(self, payload: bytes) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        stdin.write(_HEADER.pack(len(payload)) + payload)
        await stdin.drain()

    async def receive(self) -> tuple[Any, ...]:
        stdout = self.process.stdout
        assert stdout is not None
        # readexactly consumes nothing when cancelled; the header read before a
        # cancellation is kept, so the next receive picks up the same reply.
        if self._size is None:
            (self._size,) = _HEADER.unpack(await stdout.readexactly(_HEADER.size))
        body = await stdout.readexactly(self._size)
        self._size = None
        return cast("tuple[Any, ...]", pickle.loads(body))  # noqa: S301 - our own child

    def interrupt(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGUSR1)

    async def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        await self.process.wait()

    async def close(self) -> None:
        """End an idle worker: EOF on its stdin, then a kill if it lingers."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), STOP_GRACE)
        except TimeoutError:
            await self.kill()


class WorkPool:
    """Up to ``size`` work processes; calls beyond that wait for a free one."""

    def __init__(self, size: int, *, name: str = "") -> None:
        self.size = size
        self.name = name
        self.abandoned = 0
        """Calls whose work was stopped because the call ended first."""
        self.killed = 0
        """Of those, the ones whose process had to be killed and replaced."""
        self._slots = asyncio.Semaphore(size)
        self._idle: list[_Worker] = []
        self._workers: set[_Worker] = set()
        self._reclaiming: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def pids(self) -> list[int]:
        """Process ids of the running work processes."""
        return sorted(w.pid for w in self._workers)

    async def run(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        deadline: float | None = None,
    ) -> T:
        """``fn(*args, **kwargs)`` in a work process, stopped if this call ends first."""
        if self._closed:
            raise AgentError("the server is shutting down", code=ErrorCode.UNAVAILABLE)
        if getattr(fn, "__module__", None) == "__main__":
            # The work process runs its own __main__; it could not find this one.
            raise TypeError(
                f"offload({getattr(fn, '__qualname__', fn)!r}): define the function in a "
                "module the agent imports, not in the script run as __main__"
            )
        payload = pickle.dumps((fn, args, kwargs or {}), protocol=pickle.HIGHEST_PROTOCOL)
        loop = asyncio.get_running_loop()
        when = None if deadline is None else loop.time() + (deadline - time.monotonic())
        try:
            async with asyncio.timeout_at(when):
                await self._slots.acquire()
                try:
                    worker = self._idle.pop() if self._idle else await self._start()
                except BaseException:
                    self._slots.release()
                    raise
                reply = await self._call(worker, payload)
        except TimeoutError:
            raise DeadlineExceeded("the call's deadline passed while its work ran") from None
        return cast("T", _result(reply))

    async def _call(self, worker: _Worker, payload: bytes) -> tuple[Any, ...]:
        """Send the work and wait for its reply; on cancellation, stop the work."""
        try:
            await worker.send(payload)
            reply = await worker.receive()
        except asyncio.CancelledError:
            self._abandon(worker)
            raise
        except (OSError, EOFError, asyncio.IncompleteReadError, pickle.UnpicklingError):
            await self._discard(worker)
            self._slots.release()
            code = self._exit_description(worker)
            raise AgentError(f"the work process ended while running the call ({code})") from None
        self._idle.append(worker)
        self._slots.release()
        return reply

    def _abandon(self, worker: _Worker) -> None:
        self.abandoned += 1
        task = asyncio.ensure_future(self._reclaim(worker))
        self._reclaiming.add(task)
        task.add_done_callback(self._reclaiming.discard)

    async def _reclaim(self, worker: _Worker) -> None:
        """Interrupt ``worker`` and take it back when it replies, or kill it; free the slot."""
        outcome = "interrupted"
        try:
            worker.interrupt()
            try:
                async with asyncio.timeout(STOP_GRACE):
                    await worker.receive()  # the interrupted reply, or a result just too late
            except (TimeoutError, OSError, EOFError, asyncio.IncompleteReadError):
                outcome = "killed"
            if outcome == "killed" or self._closed:
                self.killed += outcome == "killed"
                await self._discard(worker)
            else:
                self._idle.append(worker)
        finally:
            self._slots.release()
            WORK_ABANDONED.labels(agent=self.name, outcome=outcome).inc()
            log.info("work abandoned", extra={"outcome": outcome, "pid": worker.pid})

    async def _start(self) -> _Worker:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            WORKER_MODULE,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        worker = _Worker(process)
        self._workers.add(worker)
        await worker.send(pickle.dumps(list(sys.path)))
        return worker

    async def _discard(self, worker: _Worker) -> None:
        self._workers.discard(worker)
        await worker.kill()

    @staticmethod
    def _exit_description(worker: _Worker) -> str:
        code = worker.process.returncode
        if code is not None and code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exit status {code}"

    async def close(self) -> None:
        """Stop every work process (calls still running are abandoned)."""
        self._closed = True
        for task in list(self._reclaiming):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        idle, self._idle = self._idle, []
        busy = self._workers.difference(idle)
        await asyncio.gather(
            *(w.close() for w in idle), *(w.kill() for w in busy), return_exceptions=True
        )
        self._workers.clear()


def _result(reply: tuple[Any, ...]) -> Any:
    kind = reply[0]
    if kind == OK:
        return reply[1]
    if kind == AGENT_ERROR:
        raise AgentError(reply[2], code=ErrorCode(reply[1]))
    raise WorkError(reply[1])
