"""The resilience knobs of the gateway configuration, per agent and for all agents.

Per-agent values override the top-level ``defaults`` section field by field::

    defaults:
      breaker: {failure_threshold: 5, reset_timeout: 30, success_threshold: 1}
      retry: {max_attempts: 3, initial_backoff: 0.05, max_backoff: 1.0}
      max_concurrency: 64
    agents:
      qa:
        address: 127.0.0.1:50066
        breaker: {failure_threshold: 3}
        fallback: summarizer
        idempotent: true
        hedge_delay: 0.2
    rate_limit:
      rate: 50
      burst: 100
      clients: {batch-importer: {rate: 5, burst: 10}}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentmesh.runtime.resilience import Backoff


class BreakerPolicy(BaseModel):
    """When an agent's circuit breaker opens and how it recovers."""

    model_config = ConfigDict(extra="forbid")

    failure_threshold: int = Field(5, ge=1, le=10_000, description="failed calls in a row to open")
    reset_timeout: float = Field(
        30.0, gt=0, le=3600, description="longest an open breaker waits before a probe (seconds)"
    )
    first_probe: float = Field(
        1.0,
        gt=0,
        le=3600,
        description="seconds open before the first probe; doubled after each failed probe, "
        "up to reset_timeout",
    )
    success_threshold: int = Field(1, ge=1, le=1000, description="probe successes to close")


class RetryPolicy(BaseModel):
    """Retries of one call: exponential backoff with full jitter."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(3, ge=1, le=10, description="attempts per call, the first included")
    initial_backoff: float = Field(0.05, gt=0, le=60, description="seconds; the first cap")
    max_backoff: float = Field(1.0, gt=0, le=300, description="seconds; the largest cap")
    multiplier: float = Field(2.0, ge=1, le=10, description="cap growth per attempt")

    @property
    def backoff(self) -> Backoff:
        """The waits between attempts (the resilience kernel's full-jitter backoff)."""
        return Backoff(self.initial_backoff, self.max_backoff, self.multiplier)


class EjectionPolicy(BaseModel):
    """Outlier ejection: a replica failing in a row leaves the rotation for a while."""

    model_config = ConfigDict(extra="forbid")

    consecutive_failures: int = Field(3, ge=1, le=1000)
    base_time: float = Field(2.0, gt=0, le=3600, description="seconds; doubles per ejection")
    max_time: float = Field(60.0, gt=0, le=3600, description="seconds; the longest ejection")
    max_ejected_percent: int = Field(50, ge=0, le=100, description="of an agent's replicas")


class ResilienceOverrides(BaseModel):
    """Per-agent resilience settings; unset fields come from ``defaults``."""

    model_config = ConfigDict(extra="forbid")

    breaker: dict[str, float] | None = None
    retry: dict[str, float] | None = None
    ejection: dict[str, float] | None = None
    max_concurrency: int | None = Field(None, ge=0, le=100_000)
    idempotent: bool | None = None
    hedge_delay: float | None = Field(None, ge=0, le=60)
    fallback: str | None = Field(None, description="agent answering when this one cannot")


class ResilienceDefaults(BaseModel):
    """Resilience settings every agent gets unless it says otherwise."""

    model_config = ConfigDict(extra="forbid")

    breaker: BreakerPolicy = Field(default_factory=BreakerPolicy)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    ejection: EjectionPolicy = Field(default_factory=EjectionPolicy)
    max_concurrency: int = Field(0, ge=0, le=100_000, description="0: no cap")
    idempotent: bool = False
    hedge_delay: float = Field(0.0, ge=0, le=60, description="seconds; 0: no hedging")
    retry_budget_ratio: float = Field(
        0.2, ge=0, le=1, description="retries allowed as a share of recent calls"
    )
    retry_budget_min_per_second: float = Field(
        10.0, ge=0, le=10_000, description="retries always allowed per second"
    )
    retry_budget_window: float = Field(10.0, gt=0, le=600, description="seconds of history")


class ClientRate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rate: float = Field(gt=0, le=1_000_000, description="tokens per second")
    burst: float = Field(ge=1, le=1_000_000, description="bucket size")


class RateLimitPolicy(BaseModel):
    """Token bucket per client identity; ``rate: 0`` turns limiting off."""

    model_config = ConfigDict(extra="forbid")

    rate: float = Field(0.0, ge=0, le=1_000_000, description="tokens per second; 0: off")
    burst: float = Field(0.0, ge=0, le=1_000_000, description="bucket size; 0: one second")
    clients: dict[str, ClientRate] = Field(default_factory=dict)
    max_clients: int = Field(10_000, ge=1, le=10_000_000, description="buckets kept")


_Section = TypeVar("_Section", "BreakerPolicy", "RetryPolicy", "EjectionPolicy")


class AgentPolicy(BaseModel):
    """One agent's effective resilience settings (defaults merged with overrides)."""

    model_config = ConfigDict(frozen=True)

    breaker: BreakerPolicy
    retry: RetryPolicy
    ejection: EjectionPolicy
    max_concurrency: int
    idempotent: bool
    hedge_delay: float
    fallback: str | None


def _section(model: type[_Section], base: _Section, override: dict[str, float] | None) -> _Section:
    if not override:
        return base
    try:
        return model.model_validate({**base.model_dump(), **override})
    except ValidationError as exc:
        section = model.__name__.removesuffix("Policy").lower()
        problem = "; ".join(
            f"{section}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(problem) from None


def agent_policy(defaults: ResilienceDefaults, overrides: ResilienceOverrides) -> AgentPolicy:
    """Merge ``overrides`` into ``defaults`` field by field (nested sections too).

    Raises ValueError naming the section and field of an invalid override.
    """
    return AgentPolicy(
        breaker=_section(BreakerPolicy, defaults.breaker, overrides.breaker),
        retry=_section(RetryPolicy, defaults.retry, overrides.retry),
        ejection=_section(EjectionPolicy, defaults.ejection, overrides.ejection),
        max_concurrency=(
            defaults.max_concurrency
            if overrides.max_concurrency is None
            else overrides.max_concurrency
        ),
        idempotent=defaults.idempotent if overrides.idempotent is None else overrides.idempotent,
        hedge_delay=defaults.hedge_delay
        if overrides.hedge_delay is None
        else overrides.hedge_delay,
        fallback=overrides.fallback,
    )


def check_policies(agents: Mapping[str, ResilienceOverrides], defaults: ResilienceDefaults) -> None:
    """Raise ValueError naming the agent and field of any invalid override or fallback."""
    for name, overrides in agents.items():
        try:
            agent_policy(defaults, overrides)
        except ValueError as exc:
            raise ValueError(f"agents.{name}.{exc}") from None
        fallback = overrides.fallback
        if fallback is not None and (fallback == name or fallback not in agents):
            why = "is the agent itself" if fallback == name else "is not declared under agents"
            raise ValueError(f"agents.{name}.fallback: {fallback!r} {why}")
