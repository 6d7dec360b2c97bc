"""Provider errors and their mapping to agent errors.

Every failure of a provider call is a :class:`ProviderError`. Its message
names the provider and what went wrong and never carries an API key: details
quoted from a provider's error body are cut to a few hundred characters and
scrubbed of the configured key. ``retryable`` says whether asking the same
provider again may help; ``caused_by_request`` says whether the request itself
is at fault (then no other provider of the chain is tried either).

:func:`to_agent_error` turns an error into the runtime's
:class:`~agentmesh.runtime.errors.AgentError`:

=============================  =====================  ==========================================
error                          ErrorCode              message (examples)
=============================  =====================  ==========================================
AuthError (HTTP 401/403)       FAILED_PRECONDITION    provider 'x' rejected the API key (HTTP 401)
BadRequest, HTTP 404           FAILED_PRECONDITION    provider 'x' does not serve model 'm' or its
                                                      base URL is wrong (HTTP 404)
NotConfiguredError             FAILED_PRECONDITION    no LLM provider is configured ...
BadRequest, other 4xx          INVALID_ARGUMENT       provider 'x' refused the request (HTTP 400):
(400, 413, 422, ...)                                  <detail>  -- the input (e.g. a prompt over
                                                      the context window) is what must change
RateLimited (429), ServerError UNAVAILABLE            provider 'x' failed (HTTP 503): <detail>
(5xx), NetworkError,                                  (after 3 tries)
ProviderTimeout, StreamError,
InvalidResponse,
CircuitOpenError
DeadlineExceededError          DEADLINE_EXCEEDED      provider 'x': deadline reached ...
AllProvidersFailed             DEADLINE_EXCEEDED if any provider ran out of time; else
                               FAILED_PRECONDITION if every failure is a configuration one
                               (AuthError, HTTP 404); else UNAVAILABLE
StructuredOutputError          INTERNAL               model output did not match schema 'S': ...
                                                      (the model broke our output contract twice;
                                                      an identical retry usually fails the same
                                                      way, so it is not advertised as transient)
=============================  =====================  ==========================================
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from agentmesh.runtime.errors import AgentError, ErrorCode

if TYPE_CHECKING:
    from agentmesh.llm._types import Attempt

#: Longest quote of a provider's error body kept in a message.
MAX_DETAIL_CHARS = 300
REDACTED = "[REDACTED]"


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each (non-trivial) secret replaced."""
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, REDACTED)
    return text


def clip(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After value: delta-seconds or an HTTP date.

    Returns ``None`` for a missing or unparseable value; a date in the past
    gives 0.
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    reference = now or datetime.now(UTC)
    return max(0.0, (when - reference).total_seconds())


class ProviderError(Exception):
    """A provider call failed. The message is safe to show and to log."""

    retryable: bool = False
    caused_by_request: bool = False

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int | None = None,
        retryable: bool | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.status = status
        self.detail = detail
        if retryable is not None:
            self.retryable = retryable
        #: HTTP requests made to the provider before giving up (set by the retry loop).
        self.tries = 0
        #: The chain's attempts, set by LLMClient.
        self.attempts: tuple[Attempt, ...] = ()

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(provider={self.provider!r}, status={self.status!r}, "
            f"message={self.message!r})"
        )


class NetworkError(ProviderError):
    """The connection failed or broke (DNS, refused, reset, protocol error)."""

    retryable = True


class ProviderTimeout(NetworkError):
    """One request timed out (connect or read) before the caller's deadline."""


class DeadlineExceededError(ProviderTimeout):
    """The caller's overall deadline passed, or a retry would have slept past it."""

    retryable = False

    def __init__(
        self, message: str, *, provider: str, last_error: ProviderError | None = None
    ) -> None:
        super().__init__(message, provider=provider, status=None)
        self.last_error = last_error


class RateLimited(ProviderError):
    """HTTP 429; ``retry_after`` is the server's Retry-After in seconds, if any."""

    retryable = True

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int | None = 429,
        retry_after: float | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message, provider=provider, status=status, detail=detail)
        self.retry_after = retry_after


class ServerError(ProviderError):
    """HTTP 5xx (including Anthropic's 529 "overloaded")."""

    retryable = True


class AuthError(ProviderError):
    """HTTP 401/403: the key is wrong, revoked or lacks access. Not retried."""


class BadRequest(ProviderError):
    """HTTP 400/404/422 and other 4xx. Not retried.

    ``caused_by_request`` is true unless the status is 404 (unknown model or
    wrong base URL: the provider's configuration, so the chain moves on).
    """

    caused_by_request = True


class InvalidResponse(ProviderError):
    """A successful status with a body that does not follow the wire format."""


class StreamError(ProviderError):
    """A stream failed: an error event, malformed data, or a cut before the end.

    ``after_output`` is true when text had already been yielded to the caller;
    such a stream is never retried nor handed to another provider.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        retryable: bool = False,
        after_output: bool = False,
        status: int | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(
            message, provider=provider, status=status, retryable=retryable, detail=detail
        )
        self.after_output = after_output


class CircuitOpenError(ProviderError):
    """The provider failed repeatedly and is cooling down; it was not called."""

    retryable = True


class NotConfiguredError(ProviderError):
    """No provider is configured (agents should check ``LLMClient.configured``)."""

    def __init__(self) -> None:
        super().__init__(
            "no LLM provider is configured (set AGENTMESH_LLM_PROVIDERS, or "
            "AGENTMESH_LLM_PROVIDER and AGENTMESH_LLM_MODEL)",
            provider="",
        )


class AllProvidersFailed(ProviderError):
    """Every provider of the chain failed; ``errors`` holds each one's error."""

    def __init__(self, errors: Sequence[ProviderError]) -> None:
        self.errors = tuple(errors)
        summary = "; ".join(_with_tries(e) for e in self.errors)
        super().__init__(
            f"all {len(self.errors)} LLM providers failed: {summary}",
            provider=",".join(e.provider for e in self.errors),
            retryable=any(e.retryable for e in self.errors),
        )


class StructuredOutputError(Exception):
    """The model's reply, even after one repair request, did not fit the schema.

    ``problems`` lists what failed (no input values are quoted); ``text`` is the
    last reply, kept for debugging and deliberately not part of the message.
    """

    def __init__(self, schema: str, problems: Sequence[str], *, text: str) -> None:
        self.schema = schema
        self.problems = tuple(problems)
        self.text = text
        self.message = (
            f"model output did not match schema {schema!r} after one repair attempt: "
            + "; ".join(self.problems)
        )
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


def _with_tries(error: ProviderError) -> str:
    if error.tries > 1:
        return f"{error.message} (after {error.tries} tries)"
    return error.message


def _is_configuration_error(error: ProviderError) -> bool:
    return isinstance(error, AuthError | NotConfiguredError) or (
        isinstance(error, BadRequest) and error.status == 404
    )


def error_code(error: ProviderError | StructuredOutputError) -> ErrorCode:
    """The status code :func:`to_agent_error` gives ``error`` (see the module table)."""
    if isinstance(error, StructuredOutputError):
        return ErrorCode.INTERNAL
    if isinstance(error, AllProvidersFailed):
        if any(isinstance(e, DeadlineExceededError) for e in error.errors):
            return ErrorCode.DEADLINE_EXCEEDED
        if all(_is_configuration_error(e) for e in error.errors):
            return ErrorCode.FAILED_PRECONDITION
        return ErrorCode.UNAVAILABLE
    if isinstance(error, DeadlineExceededError):
        return ErrorCode.DEADLINE_EXCEEDED
    if _is_configuration_error(error):
        return ErrorCode.FAILED_PRECONDITION
    if isinstance(error, BadRequest):
        return ErrorCode.INVALID_ARGUMENT
    return ErrorCode.UNAVAILABLE


def _retry_after(error: ProviderError | StructuredOutputError) -> float | None:
    """The provider's asked wait (the shortest over a chain), when one is known."""
    errors = error.errors if isinstance(error, AllProvidersFailed) else (error,)
    waits = [e.retry_after for e in errors if isinstance(e, RateLimited) and e.retry_after]
    return min(waits) if waits else None


def to_agent_error(error: ProviderError | StructuredOutputError) -> AgentError:
    """The runtime error a servicer should report for ``error``.

    A provider's Retry-After travels on as the error's ``retry_after`` (RetryInfo).
    """
    if isinstance(error, StructuredOutputError | AllProvidersFailed):
        message = error.message
    else:
        message = _with_tries(error)
    code = error_code(error)
    retry_after = _retry_after(error) if code is ErrorCode.UNAVAILABLE else None
    return AgentError(message, code=code, retry_after=retry_after)
