"""The fallback chain: the public entry point of the LLM layer.

:class:`LLMClient` asks its providers in order. It moves to the next one when
a provider fails for a reason that is not the request's fault (after that
provider's own retries: 429, 5xx, network errors, timeouts, a rejected key, an
unknown model), or when the provider's circuit is open. It stops at once on a
request the provider refused (HTTP 400/413/422: the next provider would refuse
it too) and when the caller's deadline has passed. A stream falls back only
before its first chunk was yielded.

The circuit is a plain per-provider consecutive-failure counter: after
``circuit_failure_threshold`` failed calls in a row the provider is skipped
for ``circuit_cooldown`` seconds, then given one call (half-open); a success
closes it, a failure opens it for another cool-down.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TypeVar

import httpx

from agentmesh.llm._anthropic import AnthropicProvider
from agentmesh.llm._errors import (
    AllProvidersFailed,
    CircuitOpenError,
    DeadlineExceededError,
    NotConfiguredError,
    ProviderError,
    StreamError,
)
from agentmesh.llm._http import HTTPProvider
from agentmesh.llm._mock import MockProvider
from agentmesh.llm._openai import OpenAIProvider
from agentmesh.llm._pricing import PriceTable
from agentmesh.llm._provider import Provider
from agentmesh.llm._settings import LLMSettings, ProviderConfig
from agentmesh.llm._types import Attempt, ChatChunk, ChatRequest, ChatResponse
from agentmesh.runtime.resilience import Clock, Deadline, SleepFn

logger = logging.getLogger("agentmesh.llm")

T = TypeVar("T")

_PROVIDER_CLASSES: dict[str, type[HTTPProvider]] = {
    "openai": OpenAIProvider,
    "anthropic": AnthropicProvider,
    "mock": MockProvider,
}


def build_provider(
    config: ProviderConfig,
    *,
    prices: PriceTable | None = None,
    sleep: SleepFn | None = None,
    rng: random.Random | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> HTTPProvider:
    """The provider implementation for ``config.kind``, with its own HTTP client."""
    return _PROVIDER_CLASSES[config.kind](
        config, prices=prices, sleep=sleep, rng=rng, transport=transport
    )


class _Circuit:
    """Consecutive-failure counter with a cool-down (a real breaker comes later)."""

    def __init__(self, threshold: int, cooldown: float, clock: Clock) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.clock = clock
        self.failures = 0
        self.opened_at: float | None = None

    def retry_in(self) -> float:
        """Seconds until the provider may be called again (0: it may be now)."""
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.opened_at + self.cooldown - self.clock())

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None

    def failure(self) -> None:
        self.failures += 1
        if self.failures >= self.threshold:
            self.opened_at = self.clock()


@contextlib.asynccontextmanager
async def _closing(iterator: AsyncIterator[T]) -> AsyncGenerator[AsyncIterator[T], None]:
    try:
        yield iterator
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


def _describe(error: ProviderError) -> str:
    return f"{type(error).__name__}: {error.message}"


class ModelNotAllowed(ValueError):
    """A model was asked for by a name the ``models`` allow-list does not hold."""

    def __init__(self, name: str, allowed: Sequence[str]) -> None:
        self.name = name
        self.allowed = tuple(allowed)
        listed = ", ".join(self.allowed)
        super().__init__(
            f"model {name[:64]!r} is not allowed here; allowed: {listed}"
            if listed
            else f"model {name[:64]!r} is not allowed here: no model may be chosen "
            "(the allow-list AGENTMESH_LLM_MODELS is empty)"
        )


class LLMClient:
    """Chat completions over the configured provider chain.

    Build it from settings (``LLMClient()`` reads ``AGENTMESH_LLM_*``), or
    from ready providers. ``sleep``, ``rng`` and ``transport`` are handed to
    the providers built from settings (tests inject them); ``clock`` drives
    the circuits' cool-downs. Close it with :meth:`aclose` or ``async with``.

    The allow-list of models (``settings.models``, or ``models``: name ->
    client) is what a caller may choose from: :meth:`for_model` gives the
    client of one, with its own provider and circuit, for the calls that
    chose it; the chain stays the default.
    """

    def __init__(
        self,
        settings: LLMSettings | None = None,
        *,
        providers: Sequence[Provider] | None = None,
        models: Mapping[str, LLMClient] | None = None,
        sleep: SleepFn | None = None,
        rng: random.Random | None = None,
        clock: Clock = time.monotonic,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        prices: PriceTable | None = None
        if providers is None:
            settings = settings if settings is not None else LLMSettings()
            prices = PriceTable(settings.prices)
            providers = [
                build_provider(c, prices=prices, sleep=sleep, rng=rng, transport=transport)
                for c in settings.providers
            ]
        if models is None and settings is not None and settings.models:
            prices = prices or PriceTable(settings.prices)
            models = {
                name: LLMClient(
                    settings,
                    providers=[
                        build_provider(c, prices=prices, sleep=sleep, rng=rng, transport=transport)
                    ],
                    models={},
                    clock=clock,
                )
                for name, c in settings.models.items()
            }
        threshold = settings.circuit_failure_threshold if settings is not None else 3
        cooldown = settings.circuit_cooldown if settings is not None else 30.0
        self._default_timeout = settings.request_timeout if settings is not None else None
        self._providers = tuple(providers)
        self._circuits = tuple(_Circuit(threshold, cooldown, clock) for _ in self._providers)
        self._models: dict[str, LLMClient] = dict(models or {})

    @property
    def model_names(self) -> tuple[str, ...]:
        """The names of the allow-list, in their configured order."""
        return tuple(self._models)

    def for_model(self, name: str) -> LLMClient:
        """The client of the allowed model ``name``; :class:`ModelNotAllowed` otherwise."""
        client = self._models.get(name)
        if client is None:
            raise ModelNotAllowed(name, self.model_names)
        return client

    @property
    def configured(self) -> bool:
        """False when there is no provider: callers should then work offline."""
        return bool(self._providers)

    @property
    def providers(self) -> tuple[Provider, ...]:
        return self._providers

    def __repr__(self) -> str:
        return f"LLMClient(providers={[p.name for p in self._providers]!r})"

    async def aclose(self) -> None:
        for provider in self._providers:
            await provider.aclose()
        for model in self._models.values():
            await model.aclose()

    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- calls --------------------------------------------------------------------------------

    async def complete(
        self,
        req: ChatRequest,
        *,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> ChatResponse:
        """The first successful answer of the chain.

        ``timeout`` (seconds from now) and ``deadline`` (absolute, on the
        ``time.monotonic()`` clock) bound the whole call, fallbacks included;
        the earlier wins. Raises a :class:`ProviderError` whose ``attempts``
        lists what each provider did.
        """
        chain = _Chain(self, self._deadline(timeout, deadline))
        for provider, circuit in chain.candidates():
            try:
                response = await provider.complete(req, timeout=chain.deadline.remaining())
            except ProviderError as exc:
                if not chain.failed(provider, circuit, exc):
                    raise
                continue
            chain.succeeded(provider, circuit, response.attempts)
            return dataclasses.replace(response, attempts=chain.attempts_so_far())
        raise chain.final_error()

    async def stream(
        self,
        req: ChatRequest,
        *,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> AsyncGenerator[ChatChunk, None]:
        """Text deltas of the first provider that starts answering.

        The final chunk (``final`` set) carries usage, finish reason and the
        chain's attempts. Once a chunk was yielded there is no fallback: a
        later failure is raised as a :class:`StreamError` (``after_output``)
        or :class:`DeadlineExceededError`.
        """
        chain = _Chain(self, self._deadline(timeout, deadline))
        for provider, circuit in chain.candidates():
            async with _closing(provider.stream(req, timeout=chain.deadline.remaining())) as chunks:
                try:
                    chunk = await anext(chunks)
                except StopAsyncIteration:
                    failure: ProviderError = StreamError(
                        f"provider {provider.name!r} ended the stream without output",
                        provider=provider.name,
                    )
                except ProviderError as exc:
                    failure = exc
                else:
                    while not chunk.final:
                        yield chunk
                        try:
                            chunk = await anext(chunks)
                        except StopAsyncIteration:
                            error = StreamError(
                                f"provider {provider.name!r}: the stream ended without a "
                                "final chunk",
                                provider=provider.name,
                                after_output=True,
                            )
                            chain.failed(provider, circuit, error, output_started=True)
                            raise error from None
                        except ProviderError as exc:
                            chain.failed(provider, circuit, exc, output_started=True)
                            raise
                    chain.succeeded(provider, circuit, chunk.attempts)
                    yield dataclasses.replace(chunk, attempts=chain.attempts_so_far())
                    return
            if not chain.failed(provider, circuit, failure):
                raise failure
        raise chain.final_error()

    def _deadline(self, timeout: float | None, deadline: float | None) -> Deadline:
        if timeout is None and deadline is None:
            timeout = self._default_timeout
        return Deadline.start(timeout=timeout, deadline=deadline)


class _Chain:
    """The bookkeeping of one call walking the provider chain."""

    def __init__(self, client: LLMClient, deadline: Deadline) -> None:
        if not client.configured:
            raise NotConfiguredError()
        self.deadline = deadline
        self._pairs = list(zip(client.providers, client._circuits, strict=True))
        self._attempts: list[Attempt] = []
        self._errors: list[ProviderError] = []

    def candidates(self) -> Iterator[tuple[Provider, _Circuit]]:
        """The providers to try, in order, skipping open circuits; stops at the deadline."""
        for provider, circuit in self._pairs:
            if self.deadline.expired:
                self._errors.append(
                    DeadlineExceededError(
                        f"the caller's deadline passed before provider {provider.name!r} "
                        "could be tried",
                        provider=provider.name,
                    )
                )
                return
            wait = circuit.retry_in()
            if wait > 0:
                self._attempts.append(Attempt(provider.name, provider.model, "circuit_open"))
                self._errors.append(
                    CircuitOpenError(
                        f"provider {provider.name!r} is cooling down after {circuit.failures} "
                        f"consecutive failures (next try in {wait:.1f}s)",
                        provider=provider.name,
                    )
                )
                continue
            yield provider, circuit

    def attempts_so_far(self) -> tuple[Attempt, ...]:
        return tuple(self._attempts)

    def succeeded(
        self, provider: Provider, circuit: _Circuit, attempts: tuple[Attempt, ...]
    ) -> None:
        circuit.success()
        ok = [a for a in attempts if a.outcome == "ok"]
        self._attempts.append(ok[-1] if ok else Attempt(provider.name, provider.model, "ok", 1))
        if self._errors:
            logger.info("LLM provider %s answered after a fallback", provider.name)

    def failed(
        self,
        provider: Provider,
        circuit: _Circuit,
        error: ProviderError,
        *,
        output_started: bool = False,
    ) -> bool:
        """Record ``error``; true when the next provider may be tried."""
        self._attempts.append(
            Attempt(
                provider.name,
                provider.model,
                "failed",
                tries=error.tries,
                status=error.status,
                error=_describe(error),
            )
        )
        self._errors.append(error)
        error.attempts = self.attempts_so_far()
        if error.caused_by_request:
            circuit.success()  # the provider is up; the request is what it refused
            return False
        circuit.failure()
        if output_started or (isinstance(error, DeadlineExceededError) and self.deadline.expired):
            return False
        logger.warning("LLM provider %s failed: %s", provider.name, _describe(error))
        return True

    def final_error(self) -> ProviderError:
        """The error to raise once every candidate failed or was skipped."""
        if not self._errors:
            return NotConfiguredError()
        errors = self._errors
        error = errors[0] if len(errors) == 1 else AllProvidersFailed(errors)
        error.attempts = self.attempts_so_far()
        return error
