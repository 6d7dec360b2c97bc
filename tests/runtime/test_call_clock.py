"""max_call_seconds by one clock: over-time calls are cancelled, callers' cancellations are not
taken for it, a call that is writing is left alone, and the watcher stops when idle."""

from __future__ import annotations

import asyncio

import pytest

from agentmesh.runtime.limits import CallClock


async def _held(clock: CallClock, started: asyncio.Event, *, producing: bool = True) -> str:
    timed = clock.enter()
    timed.producing = producing
    started.set()
    try:
        await asyncio.sleep(30)
        return "finished"
    except asyncio.CancelledError:
        if clock.expired(timed):
            return "over time"
        raise
    finally:
        clock.leave(timed)


def _watching() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == "max_call_seconds"]


async def test_a_call_past_its_time_is_stopped_as_over_time() -> None:
    clock = CallClock(0.2)
    started = asyncio.Event()
    assert await asyncio.wait_for(_held(clock, started), 10) == "over time"
    # Nothing left to watch: the watcher ends by itself (it may have already).
    watchers = _watching()
    await asyncio.wait_for(asyncio.gather(*watchers), 10)


async def test_a_callers_cancellation_stays_a_cancellation() -> None:
    clock = CallClock(60)
    started = asyncio.Event()
    call = asyncio.create_task(_held(clock, started))
    await started.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call


async def test_only_the_calls_past_their_time_are_cancelled() -> None:
    clock = CallClock(0.3)
    first_started, second_started = asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(_held(clock, first_started))
    await first_started.wait()
    assert await asyncio.wait_for(first, 10) == "over time"
    second = asyncio.create_task(_held(clock, second_started))
    await second_started.wait()
    assert not second.done()  # entered after the first ended: its own time is not over
    assert await asyncio.wait_for(second, 10) == "over time"


async def test_a_call_that_is_writing_is_not_cancelled() -> None:
    clock = CallClock(0.1)
    writing_started, other_started = asyncio.Event(), asyncio.Event()
    writing = asyncio.create_task(_held(clock, writing_started, producing=False))
    await writing_started.wait()
    # A producing call entered later is stopped, so the watcher has passed the writer's
    # deadline at least once by the time it returns.
    assert await asyncio.wait_for(_held(clock, other_started), 10) == "over time"
    assert not writing.done()
    writing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writing
