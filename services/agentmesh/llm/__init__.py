"""The LLM provider layer: chat completions over a fallback chain of providers.

Typical use::

    from agentmesh.llm import ChatRequest, LLMClient, Message

    async with LLMClient() as llm:          # reads AGENTMESH_LLM_* settings
        if not llm.configured:
            ...                              # no provider: run offline
        reply = await llm.complete(
            ChatRequest(messages=[Message.system("Be brief."), Message.user("Hi")]),
            timeout=30,
        )
        print(reply.text, reply.provider, reply.usage.cost_usd)

Errors are :class:`ProviderError` subclasses; :func:`to_agent_error` maps them
to :class:`agentmesh.runtime.errors.AgentError` (table in ``_errors``).
"""

from __future__ import annotations

from agentmesh.llm._anthropic import AnthropicProvider
from agentmesh.llm._client import LLMClient, ModelNotAllowed, build_provider
from agentmesh.llm._errors import (
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
    parse_retry_after,
    to_agent_error,
)
from agentmesh.llm._http import HTTPProvider
from agentmesh.llm._openai import OpenAIProvider
from agentmesh.llm._pricing import DEFAULT_PRICES, ModelPrice, PriceTable, estimate_cost
from agentmesh.llm._prompts import PromptTemplateError, placeholders, render_prompt
from agentmesh.llm._provider import Provider
from agentmesh.llm._settings import LLMSettings, PromptConfig, ProviderConfig, ProviderKind
from agentmesh.llm._sse import SSEDecoder, SSEEvent, aiter_sse
from agentmesh.llm._structured import (
    JSONExtractionError,
    SupportsComplete,
    complete_json,
    extract_json,
    iter_json,
)
from agentmesh.llm._types import (
    Attempt,
    AttemptOutcome,
    ChatChunk,
    ChatRequest,
    ChatResponse,
    Message,
    Role,
    Usage,
)
from agentmesh.runtime.resilience import Deadline  # the kernel's, re-exported

__all__ = [
    "DEFAULT_PRICES",
    "AllProvidersFailed",
    "AnthropicProvider",
    "Attempt",
    "AttemptOutcome",
    "AuthError",
    "BadRequest",
    "ChatChunk",
    "ChatRequest",
    "ChatResponse",
    "CircuitOpenError",
    "Deadline",
    "DeadlineExceededError",
    "HTTPProvider",
    "InvalidResponse",
    "JSONExtractionError",
    "LLMClient",
    "LLMSettings",
    "Message",
    "ModelNotAllowed",
    "ModelPrice",
    "NetworkError",
    "NotConfiguredError",
    "OpenAIProvider",
    "PriceTable",
    "PromptConfig",
    "PromptTemplateError",
    "Provider",
    "ProviderConfig",
    "ProviderError",
    "ProviderKind",
    "ProviderTimeout",
    "RateLimited",
    "Role",
    "SSEDecoder",
    "SSEEvent",
    "ServerError",
    "StreamError",
    "StructuredOutputError",
    "SupportsComplete",
    "Usage",
    "aiter_sse",
    "build_provider",
    "complete_json",
    "error_code",
    "estimate_cost",
    "extract_json",
    "iter_json",
    "parse_retry_after",
    "placeholders",
    "render_prompt",
    "to_agent_error",
]
