"""Errors that agent and gateway logic raise, independent of gRPC.

Logic code raises these; :mod:`agentmesh.runtime.status` turns each into the
gRPC status of the same ``ErrorCode``, with its message, plus the standard rich
error details (``google.rpc.Status``): an ``ErrorInfo`` with the error's
:attr:`~AgentError.reason` (domain ``agentmesh``), a ``BadRequest`` field
violation per :class:`FieldViolation`, and a ``RetryInfo`` when a wait is known
(:attr:`~AgentError.retry_after`). The message is sent to the caller as is, so it
must name what was wrong and must never carry a traceback, a path or a secret.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: The ``ErrorInfo.domain`` of every error agentmesh reports.
DOMAIN = "agentmesh"


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


class Reason(enum.StrEnum):
    """The stable ``ErrorInfo.reason`` values (domain ``agentmesh``); docs/resilience.md lists them.

    A reason names what happened more precisely than the status code and never
    changes for the same cause, so that programs can branch on it; the message
    stays free text for people. Errors without a more precise reason carry
    their status code's name (``INVALID_ARGUMENT``, ``UNAVAILABLE``, ...).
    """

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    AGENT_NOT_FOUND = "AGENT_NOT_FOUND"
    SKILL_NOT_FOUND = "SKILL_NOT_FOUND"
    WORKFLOW_NOT_FOUND = "WORKFLOW_NOT_FOUND"
    JOB_NOT_FOUND = "JOB_NOT_FOUND"
    NOT_FOUND = "NOT_FOUND"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    INPUT_REQUIRED = "INPUT_REQUIRED"  # the work asks its caller a question (InputRequired)
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    LIMIT_EXCEEDED = "LIMIT_EXCEEDED"  # the input is over a configured size or shape limit
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"  # the caller's quota (jobs per key) is used up
    RATE_LIMITED = "RATE_LIMITED"  # the caller's request rate is over its limit
    AGENT_OVERLOADED = "AGENT_OVERLOADED"  # the agent is at its concurrency cap
    BREAKER_OPEN = "BREAKER_OPEN"  # the agent's circuit breaker refused the call
    AGENT_DRAINING = "AGENT_DRAINING"  # every replica of the agent is shutting down
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    CANCELLED = "CANCELLED"
    UNIMPLEMENTED = "UNIMPLEMENTED"
    INTERNAL = "INTERNAL"


def default_reason(code_name: str) -> str:
    """The reason of an error whose cause has no more precise one: its code's name
    (INTERNAL for the codes no agentmesh error has: UNKNOWN, DATA_LOSS, ...)."""
    return Reason.__members__.get(code_name, Reason.INTERNAL).value


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One bad field of a request: its path (``options.sentences``) and what is wrong."""

    field: str
    description: str


class AgentError(Exception):
    """An error with a status code and a message fit for the caller.

    ``reason`` (default: the class's, else the code's name) becomes the
    ``ErrorInfo`` reason; ``metadata`` its string metadata (``{"agent": "qa"}``);
    ``violations`` the ``BadRequest`` field violations; ``retry_after`` (seconds,
    when a wait is known) the ``RetryInfo`` delay.
    """

    code: ErrorCode = ErrorCode.INTERNAL
    reason: str = ""

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode | None = None,
        reason: str | None = None,
        retry_after: float | None = None,
        violations: Sequence[FieldViolation] = (),
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.reason = reason or type(self).reason or default_reason(self.code.value)
        self.retry_after = retry_after
        self.violations = tuple(violations)
        self.metadata: dict[str, str] = dict(metadata or {})

    def __str__(self) -> str:
        return self.message


class InvalidInput(AgentError):
    """The request is malformed; ``field`` names the offending field.

    ``InvalidInput("options.sentences", "must be between 1 and 50")`` reaches
    the caller as INVALID_ARGUMENT "options.sentences: must be between 1 and 50",
    with a ``BadRequest`` field violation for ``options.sentences``.
    """

    code = ErrorCode.INVALID_ARGUMENT

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}", violations=(FieldViolation(field, problem),))
        self.field = field
        self.problem = problem


class LimitExceeded(AgentError):
    """The input is well-formed but larger than a configured limit allows.

    ``limit`` names the field or the setting over its limit; it is the
    ``limit`` entry of the ``ErrorInfo`` metadata.
    """

    code = ErrorCode.RESOURCE_EXHAUSTED
    reason = Reason.LIMIT_EXCEEDED

    def __init__(self, limit: str, problem: str, *, reason: str | None = None) -> None:
        super().__init__(f"{limit}: {problem}", reason=reason, metadata={"limit": limit})
        self.limit = limit


class NotFound(AgentError):
    code = ErrorCode.NOT_FOUND


class FailedPrecondition(AgentError):
    code = ErrorCode.FAILED_PRECONDITION


class Unavailable(AgentError):
    code = ErrorCode.UNAVAILABLE


class DeadlineExceeded(AgentError):
    code = ErrorCode.DEADLINE_EXCEEDED


#: Longest question (UTF-8 bytes) and data payload (bytes of its JSON) an InputRequired
#: carries: both travel in the error's trailers, whose total size gRPC bounds.
MAX_QUESTION_BYTES = 500
MAX_QUESTION_DATA_BYTES = 1000


class InputRequired(AgentError):
    """The work cannot go on without an answer from its caller: ``raise InputRequired("Which
    file?")`` (optionally ``data=`` a small JSON payload, e.g. the choices).

    On the wire it is FAILED_PRECONDITION with the ``ErrorInfo`` reason ``INPUT_REQUIRED``
    and the question (and ``data`` as JSON) in its metadata. A job that gets it waits in
    INPUT_REQUIRED until ResumeJob answers, then calls the agent again with the
    conversation so far; a plain call sees the error. :meth:`of` recognises one that
    crossed the wire: the one place that does.
    """

    code = ErrorCode.FAILED_PRECONDITION
    reason = Reason.INPUT_REQUIRED

    def __init__(self, question: str, *, data: Any = None, step: str = "") -> None:
        question = question.strip()
        if not question:
            raise ValueError("InputRequired needs a question")
        if len(question.encode()) > MAX_QUESTION_BYTES:
            raise ValueError(f"InputRequired: the question is over {MAX_QUESTION_BYTES} bytes")
        metadata = {"question": question}
        if data is not None:
            encoded = json.dumps(data, separators=(",", ":"))
            if len(encoded.encode()) > MAX_QUESTION_DATA_BYTES:
                raise ValueError(
                    f"InputRequired: data is over {MAX_QUESTION_DATA_BYTES} bytes of JSON"
                )
            metadata["data"] = encoded
        if step:
            metadata["step"] = step
        super().__init__(f"input required: {question}", metadata=metadata)
        self.question = question
        self.data = data
        self.step = step

    @classmethod
    def of(cls, error: BaseException) -> InputRequired | None:
        """``error`` as the question it stands for, or None when it is not one (an agent's
        error relayed by the gateway keeps its reason and metadata)."""
        if isinstance(error, InputRequired):
            return error
        if not isinstance(error, AgentError) or error.reason != Reason.INPUT_REQUIRED:
            return None
        question = error.metadata.get("question", "")
        data = None
        if "data" in error.metadata:
            try:
                data = json.loads(error.metadata["data"])
            except ValueError:
                data = None
        try:
            found = cls(question, data=data, step=error.metadata.get("step", ""))
        except ValueError:
            return None
        found.metadata.update(error.metadata)
        if "data" in found.metadata and data is None:
            del found.metadata["data"]
        return found
