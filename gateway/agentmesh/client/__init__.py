"""Python clients of the agentmesh gateway: :class:`AsyncClient` and :class:`Client`."""

from __future__ import annotations

from agentmesh.client._async import AsyncClient
from agentmesh.client._model import (
    DEFAULT_GATEWAY,
    AgentInfo,
    CallError,
    Event,
    Final,
    Progress,
    Reply,
    Started,
    StepError,
    StepFinished,
    StepPartial,
    StepStarted,
    StreamError,
    WorkflowEvent,
    WorkflowFinished,
    WorkflowStarted,
    parse_target,
)
from agentmesh.client._orchestration import FanOutResult, Job, JobEvent, Leg
from agentmesh.client._security import Security
from agentmesh.client._sessions import Session, SessionTurn
from agentmesh.client._sync import Client
from agentmesh.runtime.types import Partial

__all__ = [
    "DEFAULT_GATEWAY",
    "AgentInfo",
    "AsyncClient",
    "CallError",
    "Client",
    "Event",
    "FanOutResult",
    "Final",
    "Job",
    "JobEvent",
    "Leg",
    "Partial",
    "Progress",
    "Reply",
    "Security",
    "Session",
    "SessionTurn",
    "Started",
    "StepError",
    "StepFinished",
    "StepPartial",
    "StepStarted",
    "StreamError",
    "WorkflowEvent",
    "WorkflowFinished",
    "WorkflowStarted",
    "parse_target",
]
