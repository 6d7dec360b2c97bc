"""Mapping between logic errors and gRPC statuses, and error sanitizing.

An :class:`AgentError` becomes the gRPC status of the same name with its
message. Any other exception becomes INTERNAL with a short reference id; the
traceback goes only to the log, under that id, never to the caller.

Every error status also carries the standard rich error model: a
``google.rpc.Status`` (same code, same message) in the ``grpc-status-details-bin``
trailer, as grpcio-status and every gRPC ecosystem reads it, holding

* ``google.rpc.ErrorInfo``: a stable ``reason`` (:class:`~agentmesh.runtime.errors.Reason`),
  domain ``agentmesh``, and string metadata (``agent``, ``limit``, ...);
* ``google.rpc.BadRequest``: one field violation per bad field (INVALID_ARGUMENT);
* ``google.rpc.RetryInfo``: how long to wait, when that is known. The same
  figure in seconds is also sent as the ``retry-after`` trailer, an alias kept
  for callers that read plain metadata.

:func:`abort` and :func:`abort_status` are the only ways a call ends with an
error status; :func:`details_of` reads the details back from a failed call.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from agentmesh.runtime.errors import (
    DOMAIN,
    AgentError,
    ErrorCode,
    FieldViolation,
    Reason,
    default_reason,
)

log = logging.getLogger("agentmesh.errors")

#: The trailer holding the serialized ``google.rpc.Status``.
STATUS_DETAILS_KEY = "grpc-status-details-bin"
#: Seconds to wait before retrying, as decimal text: an alias of ``RetryInfo``.
RETRY_AFTER = "retry-after"

Trailers = tuple[tuple[str, str | bytes], ...]


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


# -- the rich error model ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatusDetails:
    """The rich details of an error status: sent by :func:`status_trailers`, read by
    :func:`details_of` (all empty when a call carried none)."""

    reason: str = ""
    domain: str = DOMAIN
    metadata: Mapping[str, str] = field(default_factory=dict)
    violations: tuple[FieldViolation, ...] = ()
    retry_after: float | None = None


_NONE = StatusDetails()


def status_trailers(
    code: grpc.StatusCode, message: str, details: StatusDetails = _NONE
) -> Trailers:
    """The trailing metadata of an error status: its ``google.rpc.Status`` (and ``retry-after``).

    The ErrorInfo reason defaults to the code's name (see :class:`Reason`).
    """
    status = status_pb2.Status(code=code.value[0], message=message)
    info = error_details_pb2.ErrorInfo(
        reason=details.reason or default_reason(code.name),
        domain=details.domain or DOMAIN,
        metadata=details.metadata,
    )
    status.details.add().Pack(info)
    if details.violations:
        bad = error_details_pb2.BadRequest()
        for violation in details.violations:
            bad.field_violations.add(field=violation.field, description=violation.description)
        status.details.add().Pack(bad)
    trailers: Trailers = ()
    if details.retry_after is not None:
        wait = max(0.0, details.retry_after)
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromNanoseconds(round(wait * 1e9))
        status.details.add().Pack(retry)
        trailers = ((RETRY_AFTER, f"{wait:.3f}"),)
    return (*rpc_status.to_status(status).trailing_metadata, *trailers)


def error_details(error: AgentError) -> StatusDetails:
    """The rich details ``error`` stands for."""
    return StatusDetails(
        reason=error.reason,
        metadata=error.metadata,
        violations=error.violations,
        retry_after=error.retry_after,
    )


def details_of(call: Any) -> StatusDetails:
    """The rich details of a failed call (a ``grpc.RpcError`` or ``grpc.aio.AioRpcError``).

    Reads the ``google.rpc.Status`` trailer, and ``retry-after`` when it has no
    ``RetryInfo``; detail types other than ErrorInfo, BadRequest and RetryInfo
    are ignored, and a malformed or mismatching Status counts as none.
    """
    trailing = getattr(call, "trailing_metadata", None)
    pairs = (trailing() if callable(trailing) else None) or ()
    try:
        status = (
            rpc_status.from_call(call) if any(k == STATUS_DETAILS_KEY for k, _ in pairs) else None
        )
    except (ValueError, DecodeError):
        status = None
    reason = domain = ""
    metadata: dict[str, str] = {}
    violations: list[FieldViolation] = []
    retry_after: float | None = None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations += [FieldViolation(v.field, v.description) for v in bad.field_violations]
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            retry_after = retry.retry_delay.ToNanoseconds() / 1e9
    if retry_after is None:
        retry_after = _retry_after_trailer(pairs)
    return StatusDetails(reason, domain, metadata, tuple(violations), retry_after)


def _retry_after_trailer(pairs: Any) -> float | None:
    for key, value in pairs:
        if key == RETRY_AFTER:
            try:
                seconds = float(value)
            except (TypeError, ValueError):
                return None
            return seconds if seconds >= 0 and seconds != float("inf") else None
    return None


async def abort_status(
    context: grpc.aio.ServicerContext[Any, Any],
    code: grpc.StatusCode,
    message: str,
    details: StatusDetails = _NONE,
) -> NoReturn:
    """End the call with ``code``, ``message`` and their rich ``details``.

    For code that holds a gRPC code rather than an :class:`AgentError` (interceptors).
    """
    await context.abort(code, message, trailing_metadata=status_trailers(code, message, details))


async def abort(
    context: grpc.aio.ServicerContext[Any, Any], exc: BaseException, *, where: str
) -> NoReturn:
    """End the call with the status ``exc`` stands for, and its rich details."""
    if isinstance(exc, AgentError):
        await abort_status(context, grpc_code(exc.code), exc.message, error_details(exc))
    message = internal_message(exc, where=where)
    await abort_status(context, grpc.StatusCode.INTERNAL, message, StatusDetails(Reason.INTERNAL))


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
