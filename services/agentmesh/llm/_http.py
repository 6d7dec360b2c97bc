"""Retrying HTTP plumbing shared by the OpenAI-compatible and Anthropic providers.

Each provider owns one pooled ``httpx.AsyncClient``. A call runs under a
:class:`Deadline`: every request's connect/read timeouts are clamped to what
is left of it and every await is bounded by it, so a hanging server cannot
hold the caller past its deadline. Transient failures are retried with full
jitter backoff (at least the server's Retry-After), never sleeping past the
deadline. API keys are sent per request and never stored on the client, so
they cannot leak through its default headers; they are also scrubbed from
any provider text quoted in an error.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import dataclasses
import json
import logging
import random
from collections.abc import AsyncGenerator, Awaitable, Iterator, Mapping
from typing import Any, ClassVar, TypeVar

import httpx
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from agentmesh.llm._errors import (
    AuthError,
    BadRequest,
    DeadlineExceededError,
    InvalidResponse,
    NetworkError,
    ProviderError,
    ProviderTimeout,
    RateLimited,
    ServerError,
    StreamError,
    clip,
    parse_retry_after,
    redact,
)
from agentmesh.llm._pricing import PriceTable
from agentmesh.llm._settings import ProviderConfig
from agentmesh.llm._sse import SSEEvent, aiter_sse
from agentmesh.llm._types import (
    Attempt,
    ChatChunk,
    ChatRequest,
    ChatResponse,
    Usage,
    prompt_text,
)
from agentmesh.runtime.resilience import Backoff, Deadline, SleepFn, retry_wait
from agentmesh.telemetry.http import traced_transport
from agentmesh.telemetry.metrics import LLM_COST, LLM_REQUESTS, LLM_TOKENS

logger = logging.getLogger("agentmesh.llm")
_tracer = trace.get_tracer("agentmesh.llm")

T = TypeVar("T")

#: A request timeout firing this close to the deadline counts as the deadline.
_DEADLINE_SLACK = 0.005

_TIMEOUT_PHASES: dict[type[httpx.TimeoutException], str] = {
    httpx.ConnectTimeout: "connecting",
    httpx.ReadTimeout: "waiting for data",
    httpx.WriteTimeout: "sending the request",
    httpx.PoolTimeout: "waiting for a pooled connection",
}


def non_negative_int(value: object) -> int | None:
    """``value`` if it is a non-negative int (not a bool), else ``None``."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


#: Metric outcome of a failed request, most specific error class first.
_OUTCOMES: tuple[tuple[type[ProviderError], str], ...] = (
    (RateLimited, "rate_limited"),
    (ServerError, "server_error"),
    (AuthError, "auth_error"),
    (BadRequest, "bad_request"),
    (DeadlineExceededError, "deadline_exceeded"),
    (ProviderTimeout, "timeout"),
    (NetworkError, "network_error"),
    (InvalidResponse, "invalid_response"),
    (StreamError, "stream_error"),
)


def outcome_label(error: ProviderError) -> str:
    """The ``outcome`` label of the LLM_REQUESTS metric for a failed request."""
    return next((label for cls, label in _OUTCOMES if isinstance(error, cls)), "error")


def _current(span: Span) -> contextlib.AbstractContextManager[Span]:
    """``span`` as the current span, leaving its status and end to the caller."""
    return trace.use_span(
        span, end_on_exit=False, record_exception=False, set_status_on_exception=False
    )


def _span_answered(
    span: Span, model: str, usage: Usage | None, attempts: tuple[Attempt, ...]
) -> None:
    span.set_attribute("gen_ai.response.model", model)
    if attempts:
        span.set_attribute("agentmesh.llm.tries", attempts[-1].tries)
    if usage is not None:
        span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
        if usage.cost_usd is not None:
            span.set_attribute("agentmesh.llm.cost_usd", usage.cost_usd)


def _span_failed(span: Span, error: ProviderError) -> None:
    # The message is safe to export: provider text in it was scrubbed of the key.
    span.set_attribute("error.type", type(error).__name__)
    span.set_attribute("agentmesh.llm.tries", error.tries)
    if error.status is not None:
        span.set_attribute("http.response.status_code", error.status)
    span.set_status(Status(StatusCode.ERROR, error.message))


def finish_reason(reason: object, vocabulary: Mapping[str, str]) -> str | None:
    """A provider's finish reason in the normalised vocabulary (unknown ones pass through)."""
    if not isinstance(reason, str) or not reason:
        return None
    return vocabulary.get(reason, reason)


class HTTPProvider(abc.ABC):
    """Base of the HTTP providers: retries, deadlines, error classification."""

    kind: ClassVar[str]
    #: Names of the prompt and completion token counts in the wire format's usage object.
    usage_keys: ClassVar[tuple[str, str]]

    def __init__(
        self,
        config: ProviderConfig,
        *,
        prices: PriceTable | None = None,
        sleep: SleepFn | None = None,
        rng: random.Random | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if config.kind != self.kind:
            raise ValueError(f"{type(self).__name__} needs kind {self.kind!r}, got {config.kind!r}")
        self.config = config
        self._prices = prices or PriceTable()
        self._sleep: SleepFn = sleep or asyncio.sleep
        self._rng = rng or random.Random()
        self._backoff = Backoff(config.backoff_initial, config.backoff_max)
        key = config.api_key.get_secret_value() if config.api_key is not None else ""
        self._secrets = (key,) if key else ()
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=16)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(
                connect=config.connect_timeout,
                read=config.read_timeout,
                write=config.connect_timeout,
                pool=config.connect_timeout,
            ),
            limits=limits,
            transport=traced_transport(transport, limits=limits),  # spans when tracing is on
            follow_redirects=False,
        )

    # -- identity ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def model(self) -> str:
        return self.config.model

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, model={self.model!r}, "
            f"base_url={self.config.base_url!r})"
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- wire format hooks ------------------------------------------------------------------

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """The endpoint requests are POSTed to."""

    @abc.abstractmethod
    def _headers(self) -> dict[str, str]:
        """Request headers, including authentication."""

    @abc.abstractmethod
    def _payload(self, req: ChatRequest, *, stream: bool) -> dict[str, Any]:
        """The JSON request body."""

    @abc.abstractmethod
    def _parse_completion(self, body: Any, req: ChatRequest) -> ChatResponse:
        """A non-streamed response body; raises InvalidResponse when malformed."""

    @abc.abstractmethod
    def _parse_stream(
        self, events: AsyncGenerator[SSEEvent, None], req: ChatRequest
    ) -> AsyncGenerator[ChatChunk, None]:
        """Chunks from SSE events, ending with a ``final`` chunk; raises StreamError."""

    # -- public calls -----------------------------------------------------------------------

    async def complete(self, req: ChatRequest, *, timeout: float | None = None) -> ChatResponse:
        with self._call_span(stream=False) as span:
            with _current(span):  # the HTTP requests' spans are its children
                response = await self._complete_retrying(req, timeout)
            _span_answered(span, response.model, response.usage, response.attempts)
            return response

    async def stream(
        self,
        req: ChatRequest,
        *,
        timeout: float | None = None,
    ) -> AsyncGenerator[ChatChunk, None]:
        # The span is current only while the next chunk is awaited, never across a
        # yield: the caller may resume or close this generator from another context.
        with self._call_span(stream=True) as span:
            async with contextlib.aclosing(self._stream_retrying(req, timeout)) as chunks:
                while True:
                    with _current(span):
                        chunk = await anext(chunks, None)
                    if chunk is None:
                        return
                    if chunk.final:
                        _span_answered(span, chunk.model, chunk.usage, chunk.attempts)
                    yield chunk

    async def _complete_retrying(self, req: ChatRequest, timeout: float | None) -> ChatResponse:
        deadline = Deadline.start(timeout=timeout)
        tries = 0
        while True:
            tries += 1
            try:
                response = await self._complete_once(req, deadline)
            except ProviderError as exc:
                exc.tries = tries
                self._record_failure(exc)
                await self._before_retry(exc, tries, deadline)
                continue
            self._record_success(response.usage, tries)
            attempt = Attempt(self.name, self.model, "ok", tries=tries)
            return dataclasses.replace(response, attempts=(attempt,))

    async def _stream_retrying(
        self, req: ChatRequest, timeout: float | None
    ) -> AsyncGenerator[ChatChunk, None]:
        deadline = Deadline.start(timeout=timeout)
        tries = 0
        while True:
            tries += 1
            async with contextlib.aclosing(self._stream_once(req, deadline)) as chunks:
                try:
                    chunk = await anext(chunks)
                except ProviderError as exc:
                    exc.tries = tries
                    self._record_failure(exc)
                    failure = exc
                except StopAsyncIteration:
                    raise self._no_final_chunk() from None
                else:
                    # From here on output has reached the caller: no more retries.
                    attempts = (Attempt(self.name, self.model, "ok", tries=tries),)
                    while True:
                        if chunk.final:
                            self._record_success(chunk.usage, tries)
                            yield dataclasses.replace(chunk, attempts=attempts)
                            return
                        yield chunk
                        try:
                            chunk = await self._next_after_output(chunks, tries)
                        except ProviderError as exc:
                            self._record_failure(exc)
                            raise
            await self._before_retry(failure, tries, deadline)

    @contextlib.contextmanager
    def _call_span(self, *, stream: bool) -> Iterator[Span]:
        """The client span of one provider call (retries included), ended on the way out;
        a ProviderError leaving it is recorded. It is not made current here."""
        span = self._start_span(stream=stream)
        try:
            yield span
        except ProviderError as exc:
            _span_failed(span, exc)
            raise
        finally:
            span.end()

    def _start_span(self, *, stream: bool) -> Span:
        """A client span of one provider call (retries included); never carries the key."""
        url = httpx.URL(self.config.base_url)
        return _tracer.start_span(
            f"chat {self.model}",
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.system": self.kind,
                "gen_ai.request.model": self.model,
                "server.address": url.host,
                "server.port": url.port or (443 if url.scheme == "https" else 80),
                "agentmesh.llm.provider": self.name,
                "agentmesh.llm.stream": stream,
            },
        )

    # -- one request ------------------------------------------------------------------------

    async def _complete_once(self, req: ChatRequest, deadline: Deadline) -> ChatResponse:
        self._check_deadline(deadline)
        payload = self._payload(req, stream=False)
        response = await self._bounded(
            self._client.post(
                self.url, json=payload, headers=self._headers(), timeout=self._timeout(deadline)
            ),
            deadline,
        )
        if response.status_code >= 300:
            raise self._error_from_response(
                response.status_code, response.headers, response.content
            )
        return self._parse_completion(self._json(response.content), req)

    async def _stream_once(
        self, req: ChatRequest, deadline: Deadline
    ) -> AsyncGenerator[ChatChunk, None]:
        self._check_deadline(deadline)
        request = self._client.build_request(
            "POST",
            self.url,
            json=self._payload(req, stream=True),
            headers={**self._headers(), "accept": "text/event-stream"},
            timeout=self._timeout(deadline),
        )
        response = await self._bounded(self._client.send(request, stream=True), deadline)
        try:
            if response.status_code >= 300:
                content = await self._bounded(response.aread(), deadline)
                raise self._error_from_response(response.status_code, response.headers, content)
            if response.headers.get("content-type", "").startswith("application/json"):
                # Some servers ignore "stream": answer with one chunk per the JSON body.
                content = await self._bounded(response.aread(), deadline)
                whole = self._parse_completion(self._json(content), req)
                if whole.text:
                    yield ChatChunk(whole.text, self.name, whole.model)
                yield ChatChunk(
                    "",
                    self.name,
                    whole.model,
                    final=True,
                    finish_reason=whole.finish_reason,
                    usage=whole.usage,
                )
                return
            lines = self._bounded_lines(response, deadline)
            events = aiter_sse(lines)
            async with (
                contextlib.aclosing(lines),
                contextlib.aclosing(events),
                contextlib.aclosing(self._parse_stream(events, req)) as chunks,
            ):
                async for chunk in chunks:
                    yield chunk
        finally:
            await response.aclose()

    async def _next_after_output(
        self, chunks: AsyncGenerator[ChatChunk, None], tries: int
    ) -> ChatChunk:
        try:
            return await anext(chunks)
        except StopAsyncIteration:
            raise self._no_final_chunk() from None
        except DeadlineExceededError:
            raise
        except ProviderError as exc:
            error = StreamError(
                f"provider {self.name!r}: stream broke after output began: {exc.message}",
                provider=self.name,
                status=exc.status,
                after_output=True,
            )
            error.tries = tries
            raise error from exc

    def _no_final_chunk(self) -> StreamError:
        return StreamError(
            f"provider {self.name!r}: the stream ended without a final chunk", provider=self.name
        )

    # -- deadlines and transport errors -----------------------------------------------------

    def _timeout(self, deadline: Deadline) -> httpx.Timeout:
        connect = deadline.clamp(self.config.connect_timeout)
        read = deadline.clamp(self.config.read_timeout)
        return httpx.Timeout(connect=connect, read=read, write=connect, pool=connect)

    def _deadline_error(self, last_error: ProviderError | None = None) -> DeadlineExceededError:
        return DeadlineExceededError(
            f"provider {self.name!r}: the caller's deadline passed before the reply was complete",
            provider=self.name,
            last_error=last_error,
        )

    def _check_deadline(self, deadline: Deadline) -> None:
        if deadline.expired:
            raise self._deadline_error()

    async def _bounded(self, awaitable: Awaitable[T], deadline: Deadline) -> T:
        """Await under the deadline, translating httpx errors to ProviderErrors."""
        scope = asyncio.timeout(deadline.remaining())
        try:
            async with scope:
                try:
                    return await awaitable
                except httpx.HTTPError as exc:
                    raise self._translate(exc, deadline) from exc
        except TimeoutError as exc:
            if scope.expired():
                raise self._deadline_error() from exc
            raise

    async def _bounded_lines(
        self, response: httpx.Response, deadline: Deadline
    ) -> AsyncGenerator[str, None]:
        lines = response.aiter_lines()
        try:
            while True:
                try:
                    line = await self._bounded(anext(lines), deadline)
                except StopAsyncIteration:
                    return
                yield line
        finally:
            if isinstance(lines, AsyncGenerator):
                await lines.aclose()

    def _translate(self, exc: httpx.HTTPError, deadline: Deadline) -> ProviderError:
        if isinstance(exc, httpx.TimeoutException):
            remaining = deadline.remaining()
            if remaining is not None and remaining <= _DEADLINE_SLACK:
                # The request timeouts were clamped to the deadline: this is it.
                return self._deadline_error()
            phase = _TIMEOUT_PHASES.get(type(exc), "waiting")
            return ProviderTimeout(
                f"provider {self.name!r} timed out while {phase}", provider=self.name
            )
        text = clip(redact(str(exc), self._secrets)) or "no details"
        return NetworkError(
            f"provider {self.name!r} could not be reached: {type(exc).__name__}: {text}",
            provider=self.name,
        )

    # -- retries ----------------------------------------------------------------------------

    async def _before_retry(self, exc: ProviderError, tries: int, deadline: Deadline) -> None:
        """Sleep before the next try, or raise when there must be none."""
        config = self.config
        if not exc.retryable or tries > config.max_retries:
            raise exc
        retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
        if retry_after is not None and retry_after > config.max_retry_after:
            logger.warning(
                "LLM provider %s asks to wait %.1fs (over max_retry_after %.1fs): giving up",
                self.name,
                retry_after,
                config.max_retry_after,
            )
            raise exc
        delay = retry_wait(
            self._backoff, tries, deadline=deadline, retry_after=retry_after, rng=self._rng
        )
        if delay is None:
            remaining = deadline.remaining() or 0.0
            error = DeadlineExceededError(
                f"provider {self.name!r}: {remaining:.2f}s left before the deadline, too little "
                f"to retry after: {exc.message}",
                provider=self.name,
                last_error=exc,
            )
            error.tries = tries
            raise error from exc
        logger.warning(
            "LLM provider %s: %s; retry %d of %d in %.2fs",
            self.name,
            exc.message,
            tries,
            config.max_retries,
            delay,
        )
        await self._sleep(delay)

    # -- responses --------------------------------------------------------------------------

    def _json(self, content: bytes) -> Any:
        try:
            return json.loads(content)
        except ValueError:
            raise InvalidResponse(
                f"provider {self.name!r} answered with a body that is not JSON",
                provider=self.name,
            ) from None

    def _event_json(self, event: SSEEvent) -> dict[str, Any]:
        try:
            data = json.loads(event.data)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise StreamError(
                f"provider {self.name!r} sent a {event.event!r} event that is not a JSON object",
                provider=self.name,
            )
        return data

    def _error_detail(self, content: bytes) -> str:
        text = content.decode("utf-8", errors="replace")
        try:
            body = json.loads(text)
        except ValueError:
            return clip(redact(text, self._secrets))
        detail: object = body
        if isinstance(body, dict):
            error = body.get("error")
            if isinstance(error, dict):
                detail = error.get("message") or error
            elif isinstance(error, str):
                detail = error
            elif isinstance(body.get("message"), str):
                detail = body["message"]
            elif isinstance(body.get("detail"), str):
                detail = body["detail"]
        return clip(
            redact(detail if isinstance(detail, str) else json.dumps(detail), self._secrets)
        )

    def _error_from_response(
        self, status: int, headers: httpx.Headers, content: bytes
    ) -> ProviderError:
        name = self.name
        detail = self._error_detail(content)
        suffix = f": {detail}" if detail else ""
        if status == 429:
            retry_after = parse_retry_after(headers.get("retry-after"))
            retry_after_ms = parse_retry_after(headers.get("retry-after-ms"))
            if retry_after_ms is not None:
                retry_after = retry_after_ms / 1000
            return RateLimited(
                f"provider {name!r} is rate limiting requests (HTTP 429){suffix}",
                provider=name,
                retry_after=retry_after,
                detail=detail,
            )
        if status in (401, 403):
            return AuthError(
                f"provider {name!r} rejected the API key (HTTP {status})",
                provider=name,
                status=status,
                detail=detail,
            )
        if status == 404:
            error = BadRequest(
                f"provider {name!r} does not serve model {self.model!r} or its base URL is "
                f"wrong (HTTP 404){suffix}",
                provider=name,
                status=status,
                detail=detail,
            )
            error.caused_by_request = False
            return error
        if status == 408:
            return ProviderTimeout(
                f"provider {name!r} timed out reading the request (HTTP 408)",
                provider=name,
                status=status,
            )
        if 400 <= status < 500:
            return BadRequest(
                f"provider {name!r} refused the request (HTTP {status}){suffix}",
                provider=name,
                status=status,
                detail=detail,
            )
        if status >= 500:
            return ServerError(
                f"provider {name!r} failed (HTTP {status}){suffix}",
                provider=name,
                status=status,
                detail=detail,
            )
        return InvalidResponse(
            f"provider {name!r} answered with unexpected HTTP {status}",
            provider=name,
            status=status,
        )

    def _response(
        self, body: Mapping[str, Any], *, text: str, finish: str | None, req: ChatRequest
    ) -> ChatResponse:
        """A complete answer: the model the body names (else the configured one) and the
        priced usage from the body's ``usage`` object (estimated where counts are missing)."""
        named = body.get("model")
        model = named if isinstance(named, str) and named else self.model
        counts = body.get("usage")
        counts = counts if isinstance(counts, Mapping) else {}
        prompt_key, completion_key = self.usage_keys
        usage = self._usage(
            counts.get(prompt_key), counts.get(completion_key), req=req, text=text, model=model
        )
        return ChatResponse(
            text=text, model=model, provider=self.name, finish_reason=finish, usage=usage
        )

    def _final_chunk(
        self,
        *,
        model: str,
        finish: str | None,
        prompt_tokens: object,
        completion_tokens: object,
        req: ChatRequest,
        text: str,
    ) -> ChatChunk:
        """The last chunk of a stream: finish reason and usage of the whole ``text``."""
        usage = self._usage(prompt_tokens, completion_tokens, req=req, text=text, model=model)
        return ChatChunk("", self.name, model, final=True, finish_reason=finish, usage=usage)

    def _usage(
        self,
        prompt_tokens: object,
        completion_tokens: object,
        *,
        req: ChatRequest,
        text: str,
        model: str,
    ) -> Usage:
        """Usage from reported counts (estimated where missing), priced."""
        prompt = non_negative_int(prompt_tokens)
        completion = non_negative_int(completion_tokens)
        if prompt is None or completion is None:
            guess = Usage.estimate(prompt_text(req.messages), text)
            prompt = guess.prompt_tokens if prompt is None else prompt
            completion = guess.completion_tokens if completion is None else completion
            usage = Usage(prompt, completion, prompt + completion, estimated=True)
        else:
            usage = Usage(prompt, completion, prompt + completion)
        price = (
            self.config.price
            or self._prices.lookup(self.config.model)
            or self._prices.lookup(model)
        )
        if price is not None:
            usage = dataclasses.replace(usage, cost_usd=price.cost(prompt, completion))
        return usage

    def _record_failure(self, error: ProviderError) -> None:
        LLM_REQUESTS.labels(self.name, self.model, outcome_label(error)).inc()

    def _record_success(self, usage: Usage | None, tries: int) -> None:
        """Count the request and its tokens and cost (labelled with the configured model,
        which keeps the label set bounded: servers may name dated snapshots)."""
        LLM_REQUESTS.labels(self.name, self.model, "ok").inc()
        if usage is None:
            return
        LLM_TOKENS.labels(self.name, self.model, "prompt").inc(usage.prompt_tokens)
        LLM_TOKENS.labels(self.name, self.model, "completion").inc(usage.completion_tokens)
        if usage.cost_usd is not None:
            LLM_COST.labels(self.name, self.model).inc(usage.cost_usd)
        if not logger.isEnabledFor(logging.DEBUG):
            return
        logger.debug(
            "LLM provider %s answered after %d tries: %d prompt + %d completion tokens%s",
            self.name,
            tries,
            usage.prompt_tokens,
            usage.completion_tokens,
            " (estimated)" if usage.estimated else "",
        )
