"""The gateway's HTTP port: A2A over JSON-RPC and HTTP+JSON, per-agent A2A, MCP (docs/a2a.md)."""

from __future__ import annotations

from agentmesh.gateway.http.app import HttpServer, http_app

__all__ = ["HttpServer", "http_app"]
