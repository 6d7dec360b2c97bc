"""What a workflow run reports, as plain dataclasses (mapped to the wire in ``wire.py``)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TypeAlias

from agentmesh.runtime.errors import ErrorCode
from agentmesh.runtime.types import Partial, Result, Usage


class Outcome(enum.Enum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    FELL_BACK = "fell_back"
    COMPENSATED = "compensated"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class StepOutput:
    """What a step produced, and which agent (if any) produced it."""

    result: Result
    agent: str = ""
    skill: str = ""


@dataclass(frozen=True, slots=True)
class RunStarted:
    run_id: str
    workflow: str
    steps: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StepStarted:
    step: str
    agent: str = ""
    skill: str = ""
    attempt: int = 1


@dataclass(frozen=True, slots=True)
class StepPartial:
    step: str
    partial: Partial


@dataclass(frozen=True, slots=True)
class StepFinished:
    step: str
    outcome: Outcome
    agent: str = ""
    code: ErrorCode | None = None
    message: str = ""
    latency_ms: float = 0.0
    attempts: int = 0
    output: StepOutput | None = None


@dataclass(frozen=True, slots=True)
class StepError:
    """A failure the run recovers from (a retried attempt, a fallback, a skip)."""

    step: str
    code: ErrorCode
    message: str


@dataclass(frozen=True, slots=True)
class RunFinished:
    run_id: str
    workflow: str
    output: StepOutput | None
    usage: Usage
    steps: tuple[StepFinished, ...] = field(default=())
    latency_ms: float = 0.0


Event: TypeAlias = RunStarted | StepStarted | StepPartial | StepFinished | StepError | RunFinished
