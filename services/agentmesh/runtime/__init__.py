"""The agentmesh runtime: what every agent service and the gateway share.

Agent authors need only this module::

    from agentmesh.runtime import Agent, AgentCard, Request, Result, Skill, run
"""

from __future__ import annotations

from agentmesh.runtime import wire
from agentmesh.runtime.agent import Agent, StreamItem, agent, collect
from agentmesh.runtime.errors import (
    AgentError,
    DeadlineExceeded,
    ErrorCode,
    FailedPrecondition,
    InputRequired,
    InvalidInput,
    LimitExceeded,
    NotFound,
    Unavailable,
)
from agentmesh.runtime.server import GrpcServer, ServiceBinding
from agentmesh.runtime.service import agent_server, run, serve
from agentmesh.runtime.settings import AgentSettings, ServerSettings, load_settings
from agentmesh.runtime.types import (
    AgentCard,
    Artifact,
    DataPart,
    FilePart,
    Mesh,
    Message,
    Part,
    Partial,
    Request,
    Result,
    Skill,
    TextPart,
    Usage,
)
from agentmesh.runtime.work import WorkPool, offload

__all__ = [
    "Agent",
    "AgentCard",
    "AgentError",
    "AgentSettings",
    "Artifact",
    "DataPart",
    "DeadlineExceeded",
    "ErrorCode",
    "FailedPrecondition",
    "FilePart",
    "GrpcServer",
    "InputRequired",
    "InvalidInput",
    "LimitExceeded",
    "Mesh",
    "Message",
    "NotFound",
    "Part",
    "Partial",
    "Request",
    "Result",
    "ServerSettings",
    "ServiceBinding",
    "Skill",
    "StreamItem",
    "TextPart",
    "Unavailable",
    "Usage",
    "WorkPool",
    "agent",
    "agent_server",
    "collect",
    "load_settings",
    "offload",
    "run",
    "serve",
    "wire",
]
