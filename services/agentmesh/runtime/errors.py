"""Errors that agent and gateway logic raise, independent of gRPC.

Logic code raises these; the servicer layer maps each ``ErrorCode`` to the
gRPC status of the same name. The message is sent to the caller as is, so it
must name what was wrong and must never carry a traceback, a path or a secret.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.Enum):
    """The subset of gRPC status codes that logic code may choose."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    CANCELLED = "CANCELLED"
    UNIMPLEMENTED = "UNIMPLEMENTED"
    INTERNAL = "INTERNAL"


class AgentError(Exception):
    """An error with a status code and a message fit for the caller."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, *, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class InvalidInput(AgentError):
    """The request is malformed; ``field`` names the offending field.

    ``InvalidInput("options.sentences", "must be between 1 and 50")`` reaches
    the caller as INVALID_ARGUMENT "options.sentences: must be between 1 and 50".
    """

    code = ErrorCode.INVALID_ARGUMENT

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class LimitExceeded(AgentError):
    """The input is well-formed but larger than a configured limit allows."""

    code = ErrorCode.RESOURCE_EXHAUSTED

    def __init__(self, limit: str, problem: str) -> None:
        super().__init__(f"{limit}: {problem}")
        self.limit = limit


class NotFound(AgentError):
    code = ErrorCode.NOT_FOUND


class FailedPrecondition(AgentError):
    code = ErrorCode.FAILED_PRECONDITION


class Unavailable(AgentError):
    code = ErrorCode.UNAVAILABLE


class DeadlineExceeded(AgentError):
    code = ErrorCode.DEADLINE_EXCEEDED
