"""``agentmesh mcp``: a stdio MCP server that forwards to a gateway's ``/mcp`` (docs/mcp.md).

Desktop apps start MCP servers as subprocesses speaking stdio; this one lists
and calls the tools of the gateway at ``--gateway`` (its HTTP port) over
streamable HTTP, with the credentials of env ``AGENTMESH_API_KEY`` or
``AGENTMESH_TOKEN``. Progress notifications and ``tools/list_changed`` are
passed on. A refused call stays the gateway's tool error.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import anyio
from rich.console import Console

from agentmesh.client import Security

DEFAULT_HTTP_GATEWAY = "127.0.0.1:8080"


def register(commands: Any) -> None:
    parser: argparse.ArgumentParser = commands.add_parser(
        "mcp",
        help="serve the gateway's tools over MCP on stdin/stdout (for desktop apps)",
        description="A stdio MCP server forwarding to the gateway's /mcp endpoint; "
        "credentials from env AGENTMESH_API_KEY or AGENTMESH_TOKEN.",
    )
    parser.add_argument(
        "--gateway",
        default=os.environ.get("AGENTMESH_HTTP_GATEWAY", DEFAULT_HTTP_GATEWAY),
        help="the gateway's HTTP port, HOST:PORT or an http(s):// URL "
        "(env AGENTMESH_HTTP_GATEWAY; default %(default)s)",
    )
    parser.set_defaults(handler=cmd_mcp)


def mcp_url(gateway: str) -> str:
    base = gateway if "://" in gateway else f"http://{gateway}"
    return base.rstrip("/") + "/mcp"


def credentials() -> dict[str, str]:
    security = Security.from_env()
    if security.api_key:
        return {"x-api-key": security.api_key}
    if security.token:
        return {"authorization": f"Bearer {security.token}"}
    return {}


def cmd_mcp(args: argparse.Namespace, console: Console) -> int:
    from agentmesh.cli.mcp_bridge import serve_stdio  # the mcp SDK, only for this command

    anyio.run(serve_stdio, mcp_url(args.gateway), credentials())
    return 0
