"""The ProviderError -> AgentError mapping."""

from __future__ import annotations

import pytest

from agentmesh.llm import (
    AllProvidersFailed,
    AuthError,
    BadRequest,
    CircuitOpenError,
    DeadlineExceededError,
    InvalidResponse,
    NetworkError,
    NotConfiguredError,
    ProviderError,
    ProviderTimeout,
    RateLimited,
    ServerError,
    StreamError,
    StructuredOutputError,
    error_code,
    to_agent_error,
)
from agentmesh.runtime.errors import AgentError, ErrorCode


def _not_found() -> BadRequest:
    error = BadRequest("provider 'p' does not serve model 'm' (HTTP 404)", provider="p", status=404)
    error.caused_by_request = False
    return error


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (
            AuthError("provider 'p' rejected the API key (HTTP 401)", provider="p", status=401),
            ErrorCode.FAILED_PRECONDITION,
        ),
        (
            AuthError("provider 'p' rejected the API key (HTTP 403)", provider="p", status=403),
            ErrorCode.FAILED_PRECONDITION,
        ),
        (_not_found(), ErrorCode.FAILED_PRECONDITION),
        (NotConfiguredError(), ErrorCode.FAILED_PRECONDITION),
        (BadRequest("x", provider="p", status=400), ErrorCode.INVALID_ARGUMENT),
        (BadRequest("x", provider="p", status=422), ErrorCode.INVALID_ARGUMENT),
        (RateLimited("x", provider="p", retry_after=1.0), ErrorCode.UNAVAILABLE),
        (ServerError("x", provider="p", status=503), ErrorCode.UNAVAILABLE),
        (NetworkError("x", provider="p"), ErrorCode.UNAVAILABLE),
        (ProviderTimeout("x", provider="p"), ErrorCode.UNAVAILABLE),
        (StreamError("x", provider="p", after_output=True), ErrorCode.UNAVAILABLE),
        (InvalidResponse("x", provider="p"), ErrorCode.UNAVAILABLE),
        (CircuitOpenError("x", provider="p"), ErrorCode.UNAVAILABLE),
        (DeadlineExceededError("x", provider="p"), ErrorCode.DEADLINE_EXCEEDED),
        (StructuredOutputError("S", ["a: bad"], text="{}"), ErrorCode.INTERNAL),
    ],
)
def test_error_codes(error: ProviderError | StructuredOutputError, code: ErrorCode) -> None:
    agent_error = to_agent_error(error)
    assert isinstance(agent_error, AgentError)
    assert agent_error.code is code is error_code(error)
    assert agent_error.message == str(error)


def test_retryability() -> None:
    assert RateLimited("x", provider="p").retryable
    assert ServerError("x", provider="p").retryable
    assert NetworkError("x", provider="p").retryable
    assert ProviderTimeout("x", provider="p").retryable
    assert not DeadlineExceededError("x", provider="p").retryable
    assert not AuthError("x", provider="p").retryable
    assert not BadRequest("x", provider="p").retryable
    assert BadRequest("x", provider="p").caused_by_request
    assert not ServerError("x", provider="p").caused_by_request


def test_chain_failures() -> None:
    server = ServerError("provider 'a' failed (HTTP 500)", provider="a", status=500)
    server.tries = 3
    auth = AuthError("provider 'b' rejected the API key (HTTP 401)", provider="b", status=401)
    deadline = DeadlineExceededError("provider 'b': deadline", provider="b")

    mixed = AllProvidersFailed([server, auth])
    assert error_code(mixed) is ErrorCode.UNAVAILABLE
    assert str(mixed) == (
        "all 2 LLM providers failed: provider 'a' failed (HTTP 500) (after 3 tries); "
        "provider 'b' rejected the API key (HTTP 401)"
    )
    assert mixed.retryable
    assert error_code(AllProvidersFailed([auth, _not_found()])) is ErrorCode.FAILED_PRECONDITION
    assert error_code(AllProvidersFailed([server, deadline])) is ErrorCode.DEADLINE_EXCEEDED


def test_repr_is_informative() -> None:
    error = RateLimited("provider 'p' is rate limiting requests (HTTP 429)", provider="p")
    assert repr(error) == (
        "RateLimited(provider='p', status=429, "
        "message=\"provider 'p' is rate limiting requests (HTTP 429)\")"
    )
