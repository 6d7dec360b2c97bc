"""The status of a gRPC span, set the same way on every span agentmesh makes.

Every client and server span of a gRPC call carries ``rpc.grpc.status_code``
(the numeric code). Its span status follows the OpenTelemetry gRPC
conventions, with one exception:

* a SERVER span is an error for UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED,
  INTERNAL, UNAVAILABLE and DATA_LOSS (a caller's mistake is not the server's);
* a CLIENT span is an error for any code but OK;
* CANCELLED is never an error: the caller chose to stop (a client went away, a
  job was cancelled, a hedge lost the race). Its span keeps status UNSET and
  ``rpc.grpc.status_code`` 1, so a trace viewer can tell it from a failure.
"""

from __future__ import annotations

import asyncio

import grpc
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

STATUS_CODE_ATTRIBUTE = "rpc.grpc.status_code"

SERVER_ERROR_CODES = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
CODE_VALUES: dict[grpc.StatusCode, int] = {code: code.value[0] for code in grpc.StatusCode}
CODE_NAMES: dict[int, str] = {value: code.name for code, value in CODE_VALUES.items()}


def is_error(code: grpc.StatusCode, *, server: bool) -> bool:
    """Whether a span that ended with ``code`` has status ERROR."""
    if code is grpc.StatusCode.OK or code is grpc.StatusCode.CANCELLED:
        return False
    return code in SERVER_ERROR_CODES if server else True


def set_rpc_status(
    span: trace.Span, code: grpc.StatusCode, *, server: bool, message: str = ""
) -> None:
    """Record ``code`` on ``span``: the attribute always, status ERROR when :func:`is_error`."""
    if not span.is_recording():
        return
    span.set_attribute(STATUS_CODE_ATTRIBUTE, CODE_VALUES[code])
    if is_error(code, server=server):
        description = f"{code.name}: {message}" if message else code.name
        span.set_status(Status(StatusCode.ERROR, description))


def code_of(error: BaseException) -> grpc.StatusCode:
    """The gRPC code an exception ending a call stands for.

    A ``grpc.RpcError`` (or any exception with a ``code`` holding a
    ``grpc.StatusCode``) gives its own; cancellation (``CancelledError``, a
    generator closed early, Ctrl-C in a synchronous client) is CANCELLED;
    anything else is UNKNOWN.
    """
    code = getattr(error, "code", None)
    if callable(code):
        try:
            code = code()
        except Exception:  # a code() that needs arguments: not a gRPC error
            code = None
    if isinstance(code, grpc.StatusCode):
        return code
    if isinstance(error, asyncio.CancelledError | GeneratorExit | KeyboardInterrupt):
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN
