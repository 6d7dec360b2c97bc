"""Declarative workflows run by the gateway: spec, validation, expressions, engine, wire.

See docs/workflows.md for the language. The gateway builds one
:class:`WorkflowService` (``gateway.workflows``) whose ``run_workflow`` serves
RunWorkflow and jobs that run workflows.
"""

from __future__ import annotations

from agentmesh.gateway.workflows.catalog import WorkflowCatalog, WorkflowConfigError
from agentmesh.gateway.workflows.engine import AgentCaller, Engine, StepFailed
from agentmesh.gateway.workflows.service import RegistryAgents, WorkflowService, load_catalog
from agentmesh.gateway.workflows.spec import WorkflowSpec, parse_workflow
from agentmesh.gateway.workflows.validate import Limits, check_agents, compile_workflow

__all__ = [
    "AgentCaller",
    "Engine",
    "Limits",
    "RegistryAgents",
    "StepFailed",
    "WorkflowCatalog",
    "WorkflowConfigError",
    "WorkflowService",
    "WorkflowSpec",
    "check_agents",
    "compile_workflow",
    "load_catalog",
    "parse_workflow",
]
