"""The agentmesh gateway: one endpoint that routes requests to agents."""

from __future__ import annotations

from agentmesh.gateway.app import Gateway
from agentmesh.gateway.config import GatewayConfig, GatewaySettings, load_config

__all__ = ["Gateway", "GatewayConfig", "GatewaySettings", "load_config"]
