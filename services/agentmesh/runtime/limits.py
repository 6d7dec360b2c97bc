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


class LimitsInterceptor(MethodInterceptor):
    """Enforces the shape and duration limits of ``settings`` on ``agentmesh.v1`` methods."""

    def __init__(self, settings: ServerSettings) -> None:
        self._max_parts = settings.max_parts
        self._max_text_chars = settings.max_text_chars
        self._max_seconds = settings.max_call_seconds
        self._wrapped = PerMethod()

    def intercept(self, details: grpc.HandlerCallDetails, handler: Handler) -> Handler:
        method: str = details.method
        if not method.startswith(LIMITED_PREFIX):
            return handler
        seconds = None if method in UNTIMED_METHODS else self._max_seconds
        return self._wrapped.get(method, handler, self._wrap, seconds)

    async def _check(self, request: object, context: Context) -> None:
        try:
            check_shape(request, max_parts=self._max_parts, max_text_chars=self._max_text_chars)
        except ShapeError as exc:
            violation = FieldViolation(exc.field, exc.problem)
            details = StatusDetails(Reason.LIMIT_EXCEEDED, violations=(violation,))
            await abort_status(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc), details)

    def _wrap(self, handler: Handler, seconds: float | None) -> Handler:
        check = self._check

        def unary(behaviour: Behaviour) -> Behaviour:
            async def serve(request: Any, context: Context) -> Any:
                await check(request, context)
                if seconds is None:
                    return await behaviour(request, context)
                try:
                    async with asyncio.timeout(seconds):
                        return await behaviour(request, context)
                except TimeoutError:
                    await _over_time(context, seconds)

            return serve

        def stream(behaviour: Behaviour) -> Behaviour:
            async def serve(request: Any, context: Context) -> AsyncIterator[Any]:
                await check(request, context)
                async for item in _bounded(
                    responses(behaviour, request, context), seconds, context
                ):
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
    items: AsyncIterator[Any], seconds: float | None, context: Context
) -> AsyncIterator[Any]:
    """``items`` until they end or ``seconds`` have passed since the first was asked for."""
    if seconds is None:
        async for item in items:
            yield item
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    iterator = aiter(items)
    while True:
        # The timeout covers producing the next item only, never the yield:
        # while suspended there the task belongs to gRPC's writer.
        try:
            async with asyncio.timeout_at(deadline):
                item = await anext(iterator)
        except StopAsyncIteration:
            return
        except TimeoutError:
            await _over_time(context, seconds)
        yield item
