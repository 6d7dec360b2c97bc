"""The gateway as an A2A v1 agent (gRPC binding): see docs/a2a.md."""

from __future__ import annotations

from agentmesh.gateway.a2a.handler import MeshRequestHandler
from agentmesh.gateway.a2a.service import A2A_SERVICE, a2a_binding

__all__ = ["A2A_SERVICE", "MeshRequestHandler", "a2a_binding"]
