"""Limits every agentmesh service enforces on its own calls, before work starts.

:class:`LimitsInterceptor` wraps every ``agentmesh.v1`` method:

- the request's shape: each ``Message`` in it (at any depth: an Invoke's
  message, a fan-out's, a workflow's input, a job's) may carry at most
  ``max_parts`` parts, and each text part at most ``max_text_chars``
  characters; over a limit is INVALID_ARGUMENT naming the field and the limit;
- the call's duration: a unary call or a whole stream may run at most
  ``max_call_seconds``, whatever deadline the client set; past it the call ends
  with RESOURCE_EXHAUSTED naming the limit.

``max_message_bytes`` is enforced by gRPC itself before any of this runs
(RESOURCE_EXHAUSTED from the transport).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
from google.protobuf.message import Message as ProtoMessage

from agentmesh.runtime.errors import FieldViolation, Reason
from agentmesh.runtime.settings import ServerSettings
from agentmesh.runtime.status import StatusDetails, abort_status
from agentmesh.telemetry.handlers import (
    Behaviour,
    Context,
    Handler,
    MethodInterceptor,
    PerMethod,
    responses,
    rewrap,
)
from agentmesh.v1 import messages_pb2 as pb

LIMITED_PREFIX = "/agentmesh.v1."
# Watching a job is not work: the job's own timeout bounds it, and a watcher
# cut at max_call_seconds would only reconnect from its offset.
UNTIMED_METHODS = frozenset({"/agentmesh.v1.Gateway/WatchJob"})


class ShapeError(ValueError):
    """A request breaks a shape limit; the message names the field and the limit."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def _messages(message: ProtoMessage, path: str) -> Iterator[tuple[str, pb.Message]]:
    """Every ``agentmesh.v1.Message`` inside ``message``, with its field path."""
    if isinstance(message, pb.Message):
        yield path, message
        return
    for field, value in message.ListFields():
        if field.message_type is None or field.message_type.full_name.startswith("google."):
            continue  # scalars, and Struct/Value trees that hold no parts
        name = f"{path}.{field.name}" if path else field.name
        if field.is_repeated:
            if field.message_type.GetOptions().map_entry:
                continue
            for index, item in enumerate(value):
                yield from _messages(item, f"{name}[{index}]")
        else:
            yield from _messages(value, name)


def check_shape(request: object, *, max_parts: int, max_text_chars: int) -> None:
    """Raise :class:`ShapeError` when ``request`` breaks ``max_parts`` or ``max_text_chars``."""
    if not isinstance(request, ProtoMessage):
        return
    # Most requests are too small to break either limit: a text has no more characters
    # than its encoded bytes, and each part takes at least two bytes (tag and length).
    # Sizing is one call into protobuf's C core; the walk below is Python per field.
    size = request.ByteSize()
    if size <= max_text_chars and size < 2 * (max_parts + 1):
        return
    for path, message in _messages(request, ""):
        if len(message.parts) > max_parts:
            raise ShapeError(
                f"{path}.parts",
                f"{len(message.parts)} parts given; the limit is {max_parts} (max_parts)",
            )
        for index, part in enumerate(message.parts):
            if part.WhichOneof("content") == "text" and len(part.text) > max_text_chars:
                raise ShapeError(
                    f"{path}.parts[{index}].text",
                    f"{len(part.text)} characters given; "
                    f"the limit is {max_text_chars} (max_text_chars)",
                )


class _Timed:
    """One call under :class:`CallClock`."""

    __slots__ = ("cancelling", "deadline", "fired", "producing", "task")

    def __init__(self, task: asyncio.Task[Any], deadline: float) -> None:
        self.task = task
        self.deadline = deadline
        self.cancelling = task.cancelling()  # cancellations asked before this call began
        self.producing = True
        self.fired = False


class CallClock:
    """Calls that may run ``seconds`` at most, all watched by one timer loop.

    ``asyncio.timeout`` schedules and cancels a timer for every call (and, around
    each event of a stream, for every event): a heap push and a cancellation on the
    path of every request. Here a call costs two dict operations; one task wakes
    every ``seconds / 20`` (0.5 s at most) while calls run and cancels those past
    their time that are producing (a stream suspended at a write is stopped at its
    next event instead). A call ends between its limit and one tick after it.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._tick = min(seconds / 20, 0.5)
        # One duration for every call: insertion order is deadline order.
        self._calls: dict[_Timed, None] = {}
        self._watcher: asyncio.Task[None] | None = None

    def enter(self) -> _Timed:
        """Start timing the current task's call."""
        task = asyncio.current_task()
        assert task is not None, "a call runs in a task"
        timed = _Timed(task, task.get_loop().time() + self.seconds)
        self._calls[timed] = None
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch(), name="max_call_seconds")
        return timed

    def leave(self, timed: _Timed) -> None:
        self._calls.pop(timed, None)

    @staticmethod
    def expired(timed: _Timed) -> bool:
        """Whether the cancellation ``timed``'s task is handling came from this clock
        (and only from it): the call is then over time, not cancelled by its caller."""
        return timed.fired and timed.task.uncancel() <= timed.cancelling

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._calls:
                await asyncio.sleep(self._tick)
                now = loop.time()
                for timed in self._calls:
                    if timed.deadline > now:
                        break
                    if timed.producing and not timed.fired:
                        timed.fired = True
                        timed.task.cancel()
        finally:
            self._watcher = None


class LimitsInterceptor(MethodInterceptor):
    """Enforces the shape and duration limits of ``settings`` on ``agentmesh.v1`` methods."""

    def __init__(self, settings: ServerSettings) -> None:
        self._max_parts = settings.max_parts
        self._max_text_chars = settings.max_text_chars
        self._clock = CallClock(settings.max_call_seconds)
        self._wrapped = PerMethod()

    def intercept(self, details: grpc.HandlerCallDetails, handler: Handler) -> Handler:
        method: str = details.method
        if not method.startswith(LIMITED_PREFIX):
            return handler
        clock = None if method in UNTIMED_METHODS else self._clock
        return self._wrapped.get(method, handler, self._wrap, clock)

    async def _check(self, request: object, context: Context) -> None:
        try:
            check_shape(request, max_parts=self._max_parts, max_text_chars=self._max_text_chars)
        except ShapeError as exc:
            violation = FieldViolation(exc.field, exc.problem)
            details = StatusDetails(Reason.LIMIT_EXCEEDED, violations=(violation,))
            await abort_status(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc), details)

    def _wrap(self, handler: Handler, clock: CallClock | None) -> Handler:
        check = self._check

        def unary(behaviour: Behaviour) -> Behaviour:
            async def serve(request: Any, context: Context) -> Any:
                await check(request, context)
                if clock is None:
                    return await behaviour(request, context)
                timed = clock.enter()
                try:
                    return await behaviour(request, context)
                except asyncio.CancelledError:
                    if not clock.expired(timed):
                        raise
                finally:
                    clock.leave(timed)
                await _over_time(context, clock.seconds)

            return serve

        def stream(behaviour: Behaviour) -> Behaviour:
            async def serve(request: Any, context: Context) -> AsyncIterator[Any]:
                await check(request, context)
                produced = responses(behaviour, request, context)
                items = produced if clock is None else _bounded(produced, clock, context)
                async for item in items:
                    yield item

            return serve

        if handler.stream_unary is not None or handler.stream_stream is not None:
            return handler  # client- and bidi-streaming: no agentmesh service has any
        return rewrap(handler, unary=unary, stream=stream)


async def _over_time(context: Context, seconds: float) -> None:
    await abort_status(
        context,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"call ran longer than the limit of {seconds:g}s (max_call_seconds)",
        StatusDetails(Reason.LIMIT_EXCEEDED, metadata={"limit": "max_call_seconds"}),
    )


async def _bounded(
    items: AsyncIterator[Any], clock: CallClock, context: Context
) -> AsyncIterator[Any]:
    """``items`` until they end or the clock's time has passed since the first was asked for.

    Only producing an item is timed, never the yield: while suspended there the call
    is writing, and a stream past its time is stopped when it asks for the next item.
    """
    timed = clock.enter()
    loop = timed.task.get_loop()
    iterator = aiter(items)
    try:
        while True:
            if loop.time() >= timed.deadline:
                await _over_time(context, clock.seconds)
            timed.producing = True
            try:
                item = await anext(iterator)
            except StopAsyncIteration:
                return
            except asyncio.CancelledError:
                if not clock.expired(timed):
                    raise
                await _over_time(context, clock.seconds)
            finally:
                timed.producing = False
            yield item
    finally:
        clock.leave(timed)
