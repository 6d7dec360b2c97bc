"""Mapping between logic errors and gRPC statuses, and error sanitizing.

An :class:`AgentError` becomes the gRPC status of the same name with its
message. Any other exception becomes INTERNAL with a short reference id; the
traceback goes only to the log, under that id, never to the caller.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import grpc

from agentmesh.runtime.errors import AgentError, ErrorCode

log = logging.getLogger("agentmesh.errors")


def grpc_code(code: ErrorCode) -> grpc.StatusCode:
    return grpc.StatusCode[code.value]


def error_code(code: grpc.StatusCode) -> ErrorCode:
    """The logic-side code for a gRPC status (INTERNAL for ones logic never picks)."""
    return ErrorCode.__members__.get(code.name, ErrorCode.INTERNAL)


def internal_message(exc: BaseException, *, where: str) -> str:
    """Log ``exc`` with a fresh reference id and return the caller-safe message."""
    ref = uuid.uuid4().hex[:12]
    log.error(
        "unexpected error",
        exc_info=(type(exc), exc, exc.__traceback__),
        extra={"ref": ref, "where": where},
    )
    return f"internal error (ref {ref})"


async def abort(
    context: grpc.aio.ServicerContext[Any, Any], exc: BaseException, *, where: str
) -> NoReturn:
    """End the call with the status ``exc`` stands for."""
    if isinstance(exc, AgentError):
        await context.abort(grpc_code(exc.code), exc.message)
    await context.abort(grpc.StatusCode.INTERNAL, internal_message(exc, where=where))


# -- one error mapping for every servicer method --------------------------------

_Servicer = TypeVar("_Servicer")
_Request = TypeVar("_Request")
_Response = TypeVar("_Response")
_Context = grpc.aio.ServicerContext[Any, Any]


def unary_errors(
    method: Callable[[_Servicer, _Request, _Context], Awaitable[_Response]],
) -> Callable[[_Servicer, _Request, _Context], Awaitable[_Response]]:
    """End a unary method's call with the status its exception stands for.

    Cancellation passes through; an :class:`AgentError` becomes its status and
    message; anything else becomes a sanitized INTERNAL (see :func:`abort`).
    """
    where = method.__qualname__

    @functools.wraps(method)
    async def mapped(self: _Servicer, request: _Request, context: _Context) -> _Response:
        try:
            return await method(self, request, context)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await abort(context, exc, where=where)

    return mapped


def stream_errors(
    method: Callable[[_Servicer, _Request, _Context], AsyncIterator[_Response]],
) -> Callable[[_Servicer, _Request, _Context], AsyncIterator[_Response]]:
    """:func:`unary_errors` for a server-streaming method (events already sent stay sent)."""
    where = method.__qualname__

    @functools.wraps(method)
    async def mapped(
        self: _Servicer, request: _Request, context: _Context
    ) -> AsyncIterator[_Response]:
        try:
            async for item in method(self, request, context):
                yield item
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await abort(context, exc, where=where)

    return mapped
